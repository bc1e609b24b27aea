//! Column buffers: one per table, appended to row by row and finished into
//! a RecordBatch of the table's schema.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, BooleanBuilder, Date32Array, Decimal128Builder, Float64Array,
    Int64Array, RecordBatch, StringBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};

use crate::datagen::schema;

pub(super) struct PatientCols {
    pub(super) id: Vec<i64>,
    pub(super) mrn: StringBuilder,
    pub(super) first: StringBuilder,
    pub(super) last: StringBuilder,
    pub(super) ssn: StringBuilder,
    pub(super) birth: Vec<i32>,
    pub(super) sex: StringBuilder,
    pub(super) zip: StringBuilder,
    pub(super) phone: StringBuilder,
    pub(super) email: StringBuilder,
    pub(super) site: StringBuilder,
    pub(super) deceased: BooleanBuilder,
}

impl PatientCols {
    pub(super) fn new(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            mrn: StringBuilder::with_capacity(n, n * 11),
            first: StringBuilder::with_capacity(n, n * 7),
            last: StringBuilder::with_capacity(n, n * 7),
            ssn: StringBuilder::with_capacity(n, n * 11),
            birth: Vec::with_capacity(n),
            sex: StringBuilder::with_capacity(n, n),
            zip: StringBuilder::with_capacity(n, n * 5),
            phone: StringBuilder::with_capacity(n, n * 12),
            email: StringBuilder::with_capacity(n, n * 30),
            site: StringBuilder::with_capacity(n, n * 3),
            deceased: BooleanBuilder::with_capacity(n),
        }
    }

    pub(super) fn finish(mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.id)),
            Arc::new(self.mrn.finish()),
            Arc::new(self.first.finish()),
            Arc::new(self.last.finish()),
            Arc::new(self.ssn.finish()),
            Arc::new(Date32Array::from(self.birth)),
            Arc::new(self.sex.finish()),
            Arc::new(self.zip.finish()),
            Arc::new(self.phone.finish()),
            Arc::new(self.email.finish()),
            Arc::new(self.site.finish()),
            Arc::new(self.deceased.finish()),
        ];
        RecordBatch::try_new(schema::patients(), cols).expect("patients batch matches schema")
    }
}

pub(super) struct EncounterCols {
    pub(super) id: Vec<i64>,
    pub(super) patient: Vec<i64>,
    pub(super) site: StringBuilder,
    pub(super) admit: Vec<i64>,
    pub(super) discharge: TimestampMicrosecondBuilder,
    pub(super) etype: StringBuilder,
    pub(super) dx: StringBuilder,
    pub(super) npi: StringBuilder,
}

impl EncounterCols {
    pub(super) fn new(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            patient: Vec::with_capacity(n),
            site: StringBuilder::with_capacity(n, n * 3),
            admit: Vec::with_capacity(n),
            discharge: TimestampMicrosecondBuilder::with_capacity(n),
            etype: StringBuilder::with_capacity(n, n * 10),
            dx: StringBuilder::with_capacity(n, n * 6),
            npi: StringBuilder::with_capacity(n, n * 10),
        }
    }

    pub(super) fn finish(mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.id)),
            Arc::new(Int64Array::from(self.patient)),
            Arc::new(self.site.finish()),
            Arc::new(TimestampMicrosecondArray::from(self.admit)),
            Arc::new(self.discharge.finish()),
            Arc::new(self.etype.finish()),
            Arc::new(self.dx.finish()),
            Arc::new(self.npi.finish()),
        ];
        RecordBatch::try_new(schema::encounters(), cols).expect("encounters batch matches schema")
    }
}

pub(super) struct ObservationCols {
    pub(super) id: Vec<i64>,
    pub(super) patient: Vec<i64>,
    pub(super) encounter: Vec<i64>,
    pub(super) code: StringBuilder,
    pub(super) value: Vec<f64>,
    pub(super) unit: StringBuilder,
    pub(super) at: Vec<i64>,
}

impl ObservationCols {
    pub(super) fn new(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            patient: Vec::with_capacity(n),
            encounter: Vec::with_capacity(n),
            code: StringBuilder::with_capacity(n, n * 6),
            value: Vec::with_capacity(n),
            unit: StringBuilder::with_capacity(n, n * 6),
            at: Vec::with_capacity(n),
        }
    }

    pub(super) fn finish(mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.id)),
            Arc::new(Int64Array::from(self.patient)),
            Arc::new(Int64Array::from(self.encounter)),
            Arc::new(self.code.finish()),
            Arc::new(Float64Array::from(self.value)),
            Arc::new(self.unit.finish()),
            Arc::new(TimestampMicrosecondArray::from(self.at)),
        ];
        RecordBatch::try_new(schema::observations(), cols)
            .expect("observations batch matches schema")
    }
}

pub(super) struct ClaimCols {
    pub(super) id: Vec<i64>,
    pub(super) patient: Vec<i64>,
    pub(super) site: StringBuilder,
    pub(super) payer: StringBuilder,
    pub(super) service_date: Vec<i32>,
    pub(super) cpt: StringBuilder,
    pub(super) icd10: StringBuilder,
    pub(super) billed: Vec<i128>,
    pub(super) allowed: Decimal128Builder,
    pub(super) status: StringBuilder,
    pub(super) denial: StringBuilder,
}

impl ClaimCols {
    pub(super) fn new(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            patient: Vec::with_capacity(n),
            site: StringBuilder::with_capacity(n, n * 3),
            payer: StringBuilder::with_capacity(n, n * 10),
            service_date: Vec::with_capacity(n),
            cpt: StringBuilder::with_capacity(n, n * 5),
            icd10: StringBuilder::with_capacity(n, n * 6),
            billed: Vec::with_capacity(n),
            allowed: Decimal128Builder::with_capacity(n),
            status: StringBuilder::with_capacity(n, n * 5),
            denial: StringBuilder::with_capacity(n, n * 4),
        }
    }

    pub(super) fn finish(mut self) -> RecordBatch {
        let billed = datafusion::arrow::array::Decimal128Array::from(self.billed)
            .with_precision_and_scale(12, 2)
            .expect("valid decimal precision");
        let allowed = self
            .allowed
            .finish()
            .with_precision_and_scale(12, 2)
            .expect("valid decimal precision");
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.id)),
            Arc::new(Int64Array::from(self.patient)),
            Arc::new(self.site.finish()),
            Arc::new(self.payer.finish()),
            Arc::new(Date32Array::from(self.service_date)),
            Arc::new(self.cpt.finish()),
            Arc::new(self.icd10.finish()),
            Arc::new(billed),
            Arc::new(allowed),
            Arc::new(self.status.finish()),
            Arc::new(self.denial.finish()),
        ];
        RecordBatch::try_new(schema::claims(), cols).expect("claims batch matches schema")
    }
}

pub(super) struct ConsentCols {
    pub(super) patient: Vec<i64>,
    pub(super) purpose: StringBuilder,
    pub(super) granted: Vec<bool>,
    pub(super) recorded: Vec<i64>,
    pub(super) expires: TimestampMicrosecondBuilder,
}

impl ConsentCols {
    pub(super) fn new(n: usize) -> Self {
        Self {
            patient: Vec::with_capacity(n),
            purpose: StringBuilder::with_capacity(n, n * 9),
            granted: Vec::with_capacity(n),
            recorded: Vec::with_capacity(n),
            expires: TimestampMicrosecondBuilder::with_capacity(n),
        }
    }

    pub(super) fn finish(mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.patient)),
            Arc::new(self.purpose.finish()),
            Arc::new(BooleanArray::from(self.granted)),
            Arc::new(TimestampMicrosecondArray::from(self.recorded)),
            Arc::new(self.expires.finish()),
        ];
        RecordBatch::try_new(schema::consents(), cols).expect("consents batch matches schema")
    }
}
