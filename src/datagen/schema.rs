//! Arrow schemas of the generated tables.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

pub(super) fn patients() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Int64, false),
        utf8("mrn", false),
        utf8("first_name", false),
        utf8("last_name", false),
        utf8("ssn", true),
        Field::new("birth_date", DataType::Date32, false),
        utf8("sex", false),
        utf8("zip", false),
        utf8("phone", true),
        utf8("email", true),
        utf8("site_id", false),
        Field::new("deceased", DataType::Boolean, false),
    ]))
}

pub(super) fn encounters() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("encounter_id", DataType::Int64, false),
        Field::new("patient_id", DataType::Int64, false),
        utf8("site_id", false),
        Field::new("admit_ts", ts(), false),
        Field::new("discharge_ts", ts(), true),
        utf8("encounter_type", false),
        utf8("primary_dx", false),
        utf8("attending_npi", false),
    ]))
}

pub(super) fn observations() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("observation_id", DataType::Int64, false),
        Field::new("patient_id", DataType::Int64, false),
        Field::new("encounter_id", DataType::Int64, false),
        utf8("loinc_code", false),
        Field::new("value_num", DataType::Float64, false),
        utf8("unit", false),
        Field::new("observed_at", ts(), false),
    ]))
}

pub(super) fn claims() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("claim_id", DataType::Int64, false),
        Field::new("patient_id", DataType::Int64, false),
        utf8("site_id", false),
        utf8("payer", false),
        Field::new("service_date", DataType::Date32, false),
        utf8("cpt_code", false),
        utf8("icd10_code", false),
        Field::new("billed_amount", DataType::Decimal128(12, 2), false),
        Field::new("allowed_amount", DataType::Decimal128(12, 2), true),
        utf8("status", false),
        utf8("denial_reason", true),
    ]))
}

pub(super) fn consents() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Int64, false),
        utf8("purpose", false),
        Field::new("granted", DataType::Boolean, false),
        Field::new("recorded_at", ts(), false),
        Field::new("expires_at", ts(), true),
    ]))
}
