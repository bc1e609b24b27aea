//! Built-in, fictitious vocabularies used by the synthetic data generator.
//!
//! Nothing here is real patient data. Names are common given/family names,
//! phone numbers use the `555-01xx` range reserved for fiction, e-mail domains
//! are the RFC 2606 `example.*` domains, SSNs use the never-issued 9xx area.

/// A care site of the fictitious health system.
pub(crate) struct Site {
    pub id: &'static str,
    /// Relative size of the site (share of patients whose home site it is).
    pub weight: u32,
    /// 3-digit ZIP prefixes of the site's catchment area. `036` and `692` are
    /// HIPAA Safe Harbor restricted prefixes (population < 20,000), included on
    /// purpose so zip3 de-identification rules have something to act on.
    pub zip3: &'static [&'static str],
    /// Telephone area code used for the site's patients.
    pub area_code: &'static str,
}

pub(crate) const SITES: [Site; 12] = [
    Site {
        id: "S01",
        weight: 14,
        zip3: &["021", "024"],
        area_code: "617",
    },
    Site {
        id: "S02",
        weight: 12,
        zip3: &["100", "112"],
        area_code: "212",
    },
    Site {
        id: "S03",
        weight: 10,
        zip3: &["191", "190"],
        area_code: "215",
    },
    Site {
        id: "S04",
        weight: 9,
        zip3: &["606", "604"],
        area_code: "312",
    },
    Site {
        id: "S05",
        weight: 9,
        zip3: &["770", "773"],
        area_code: "713",
    },
    Site {
        id: "S06",
        weight: 8,
        zip3: &["900", "913"],
        area_code: "213",
    },
    Site {
        id: "S07",
        weight: 8,
        zip3: &["981", "980"],
        area_code: "206",
    },
    Site {
        id: "S08",
        weight: 7,
        zip3: &["303", "300"],
        area_code: "404",
    },
    Site {
        id: "S09",
        weight: 6,
        zip3: &["850", "852"],
        area_code: "602",
    },
    Site {
        id: "S10",
        weight: 6,
        zip3: &["802", "801"],
        area_code: "303",
    },
    Site {
        id: "S11",
        weight: 6,
        zip3: &["036", "038"],
        area_code: "603",
    },
    Site {
        id: "S12",
        weight: 5,
        zip3: &["692", "681"],
        area_code: "402",
    },
];

pub(crate) const FEMALE_FIRST_NAMES: &[&str] = &[
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Lisa",
    "Nancy",
    "Betty",
    "Sandra",
    "Margaret",
    "Ashley",
    "Kimberly",
    "Emily",
    "Donna",
    "Michelle",
    "Carol",
    "Amanda",
    "Melissa",
    "Deborah",
    "Stephanie",
    "Maria",
    "Sophia",
    "Olivia",
    "Emma",
    "Ava",
    "Isabella",
    "Mia",
    "Aaliyah",
    "Mei",
    "Priya",
    "Fatima",
    "Ana",
    "Guadalupe",
    "Keisha",
    "Yuki",
    "Chloe",
    "Grace",
    "Zoe",
    "Nora",
];

pub(crate) const MALE_FIRST_NAMES: &[&str] = &[
    "James",
    "Robert",
    "John",
    "Michael",
    "David",
    "William",
    "Richard",
    "Joseph",
    "Thomas",
    "Christopher",
    "Charles",
    "Daniel",
    "Matthew",
    "Anthony",
    "Mark",
    "Donald",
    "Steven",
    "Paul",
    "Andrew",
    "Joshua",
    "Kenneth",
    "Kevin",
    "Brian",
    "George",
    "Timothy",
    "Jose",
    "Luis",
    "Carlos",
    "Juan",
    "Wei",
    "Raj",
    "Mohammed",
    "Ahmed",
    "Hiroshi",
    "Dmitri",
    "Liam",
    "Noah",
    "Elijah",
    "Mateo",
    "Lucas",
    "Ethan",
    "Jamal",
    "Tyrone",
    "Sean",
];

pub(crate) const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Chen",
    "Wang",
    "Kim",
    "Patel",
    "Singh",
    "Khan",
    "Cohen",
    "Murphy",
    "O'Brien",
    "O'Connor",
    "Smith-Jones",
    "Kowalski",
    "Novak",
    "Schmidt",
    "Rossi",
    "Silva",
    "Tanaka",
    "Okafor",
    "Mensah",
    "Haddad",
    "Ivanov",
    "Larsen",
    "Dubois",
    "Yamamoto",
    "Gupta",
    "Reyes",
];

pub(crate) const EMAIL_DOMAINS: [&str; 2] = ["example.org", "example.com"];

/// Payers. Index constants below are used by the generator.
pub(crate) const PAYERS: [&str; 9] = [
    "Medicare",
    "Medicaid",
    "Aetna",
    "BlueCross BlueShield",
    "Cigna",
    "UnitedHealthcare",
    "Humana",
    "Kaiser Permanente",
    "Self-Pay",
];
pub(crate) const PAYER_MEDICARE: u8 = 0;
pub(crate) const PAYER_MEDICAID: u8 = 1;
pub(crate) const PAYER_SELF: u8 = 8;
/// Commercial payers (indexes into [`PAYERS`]).
pub(crate) const COMMERCIAL_PAYERS: [u8; 6] = [2, 3, 4, 5, 6, 7];

/// Claim adjustment (CARC) based denial reasons.
pub(crate) const DENIAL_REASONS: &[&str] = &[
    "CO-16 Missing or invalid claim information",
    "CO-50 Not medically necessary",
    "CO-97 Service bundled with another procedure",
    "CO-29 Timely filing limit expired",
    "CO-197 Precertification or authorization absent",
    "PR-1 Deductible amount",
    "CO-18 Duplicate claim",
    "CO-22 Coordination of benefits",
    "CO-109 Service not covered by this payer",
    "CO-27 Coverage terminated before date of service",
];

/// Chronic condition flags (bit positions) and their ICD-10-CM codes.
pub(crate) const COND_DIABETES: u16 = 1 << 0;
pub(crate) const COND_HTN: u16 = 1 << 1;
pub(crate) const COND_ASTHMA: u16 = 1 << 2;
pub(crate) const COND_HLD: u16 = 1 << 3;
pub(crate) const COND_CKD: u16 = 1 << 4;
pub(crate) const COND_COPD: u16 = 1 << 5;
pub(crate) const COND_AFIB: u16 = 1 << 6;
pub(crate) const COND_HF: u16 = 1 << 7;
pub(crate) const COND_OBESITY: u16 = 1 << 8;
pub(crate) const COND_DEPRESSION: u16 = 1 << 9;

/// (flag, ICD-10-CM code) for chronic conditions. Diabetes has two codes,
/// chosen by the patient's glycemic control.
pub(crate) const CHRONIC_DX: [(u16, &str); 10] = [
    (COND_DIABETES, "E11.9"),
    (COND_HTN, "I10"),
    (COND_ASTHMA, "J45.909"),
    (COND_HLD, "E78.5"),
    (COND_CKD, "N18.30"),
    (COND_COPD, "J44.9"),
    (COND_AFIB, "I48.91"),
    (COND_HF, "I50.9"),
    (COND_OBESITY, "E66.9"),
    (COND_DEPRESSION, "F32.9"),
];
/// Type 2 diabetes with hyperglycemia (used for poorly controlled diabetics).
pub(crate) const DX_DIABETES_HYPERGLYCEMIA: &str = "E11.65";

/// Acute / episodic outpatient diagnoses.
pub(crate) const OUTPATIENT_ACUTE_DX: &[&str] = &[
    "J06.9", "M54.50", "R51.9", "N39.0", "K21.9", "F41.1", "R10.9", "H66.90", "J02.9", "L30.9",
    "M25.561", "R05.9", "E55.9", "Z23",
];
pub(crate) const DX_ADULT_EXAM: &str = "Z00.00";
pub(crate) const DX_CHILD_EXAM: &str = "Z00.129";
/// Emergency department diagnoses.
pub(crate) const EMERGENCY_DX: &[&str] = &[
    "R07.9", "S93.401A", "R10.9", "J18.9", "S01.81XA", "R55", "N39.0", "S52.501A", "J45.901",
    "U07.1", "T78.40XA", "R51.9",
];
/// Inpatient (non-chronic) principal diagnoses.
pub(crate) const INPATIENT_DX: &[&str] = &[
    "J18.9", "A41.9", "U07.1", "I21.4", "N17.9", "K35.80", "I63.9",
];

/// Every ICD-10-CM code the generator can emit, with a description: the
/// vocabulary the generator's tests check every emitted code against.
#[cfg(test)]
pub(crate) const ICD10_CODES: &[(&str, &str)] = &[
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("E11.65", "Type 2 diabetes mellitus with hyperglycemia"),
    ("I10", "Essential (primary) hypertension"),
    ("J45.909", "Unspecified asthma, uncomplicated"),
    ("J45.901", "Unspecified asthma with (acute) exacerbation"),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("N18.30", "Chronic kidney disease, stage 3 unspecified"),
    (
        "J44.9",
        "Chronic obstructive pulmonary disease, unspecified",
    ),
    ("I48.91", "Unspecified atrial fibrillation"),
    ("I50.9", "Heart failure, unspecified"),
    ("E66.9", "Obesity, unspecified"),
    (
        "F32.9",
        "Major depressive disorder, single episode, unspecified",
    ),
    ("J06.9", "Acute upper respiratory infection, unspecified"),
    ("M54.50", "Low back pain, unspecified"),
    ("R51.9", "Headache, unspecified"),
    ("N39.0", "Urinary tract infection, site not specified"),
    (
        "K21.9",
        "Gastro-esophageal reflux disease without esophagitis",
    ),
    ("F41.1", "Generalized anxiety disorder"),
    ("R10.9", "Unspecified abdominal pain"),
    ("H66.90", "Otitis media, unspecified, unspecified ear"),
    ("J02.9", "Acute pharyngitis, unspecified"),
    ("L30.9", "Dermatitis, unspecified"),
    ("M25.561", "Pain in right knee"),
    ("R05.9", "Cough, unspecified"),
    ("E55.9", "Vitamin D deficiency, unspecified"),
    ("Z23", "Encounter for immunization"),
    (
        "Z00.00",
        "Encounter for general adult medical examination without abnormal findings",
    ),
    (
        "Z00.129",
        "Encounter for routine child health examination without abnormal findings",
    ),
    ("R07.9", "Chest pain, unspecified"),
    (
        "S93.401A",
        "Sprain of unspecified ligament of right ankle, initial encounter",
    ),
    ("J18.9", "Pneumonia, unspecified organism"),
    (
        "S01.81XA",
        "Laceration without foreign body of other part of head, initial encounter",
    ),
    ("R55", "Syncope and collapse"),
    (
        "S52.501A",
        "Unspecified fracture of the lower end of right radius, initial encounter",
    ),
    ("U07.1", "COVID-19"),
    ("T78.40XA", "Allergy, unspecified, initial encounter"),
    ("A41.9", "Sepsis, unspecified organism"),
    ("I21.4", "Non-ST elevation (NSTEMI) myocardial infarction"),
    ("N17.9", "Acute kidney failure, unspecified"),
    ("K35.80", "Unspecified acute appendicitis"),
    ("I63.9", "Cerebral infarction, unspecified"),
];

/// CPT codes with a typical billed amount in cents.
pub(crate) const CPT_CODES: &[(&str, &str, i64)] = &[
    (
        "99212",
        "Office visit, established patient, straightforward",
        11_000,
    ),
    (
        "99213",
        "Office visit, established patient, low complexity",
        16_000,
    ),
    (
        "99214",
        "Office visit, established patient, moderate complexity",
        24_000,
    ),
    (
        "99215",
        "Office visit, established patient, high complexity",
        33_000,
    ),
    ("99203", "Office visit, new patient, low complexity", 22_000),
    (
        "99204",
        "Office visit, new patient, moderate complexity",
        34_000,
    ),
    (
        "99395",
        "Preventive visit, established patient, 18-39",
        28_000,
    ),
    (
        "99396",
        "Preventive visit, established patient, 40-64",
        30_000,
    ),
    (
        "99397",
        "Preventive visit, established patient, 65+",
        32_000,
    ),
    (
        "99392",
        "Preventive visit, established patient, 1-4",
        24_000,
    ),
    (
        "99283",
        "Emergency department visit, moderate severity",
        48_000,
    ),
    ("99284", "Emergency department visit, high severity", 82_000),
    (
        "99285",
        "Emergency department visit, highest severity",
        125_000,
    ),
    (
        "99222",
        "Initial hospital care, moderate complexity",
        52_000,
    ),
    ("99223", "Initial hospital care, high complexity", 78_000),
    ("83036", "Hemoglobin A1c", 5_500),
    ("80061", "Lipid panel", 9_500),
    ("80048", "Basic metabolic panel", 7_000),
    ("80053", "Comprehensive metabolic panel", 11_000),
    ("85025", "Complete blood count with differential", 4_500),
    ("82565", "Creatinine, blood", 3_000),
    ("82947", "Glucose, quantitative, blood", 2_500),
];

/// Index of a CPT code in [`CPT_CODES`] (compile-time names for the generator).
pub(crate) mod cpt {
    pub(crate) const E99212: usize = 0;
    pub(crate) const E99213: usize = 1;
    pub(crate) const E99214: usize = 2;
    pub(crate) const E99215: usize = 3;
    pub(crate) const E99203: usize = 4;
    pub(crate) const E99204: usize = 5;
    pub(crate) const P99395: usize = 6;
    pub(crate) const P99396: usize = 7;
    pub(crate) const P99397: usize = 8;
    pub(crate) const P99392: usize = 9;
    pub(crate) const ED99283: usize = 10;
    pub(crate) const ED99284: usize = 11;
    pub(crate) const ED99285: usize = 12;
    pub(crate) const IP99222: usize = 13;
    pub(crate) const IP99223: usize = 14;
    pub(crate) const LAB_A1C: usize = 15;
    pub(crate) const LAB_LIPID: usize = 16;
    pub(crate) const LAB_BMP: usize = 17;
    pub(crate) const LAB_CMP: usize = 18;
    pub(crate) const LAB_CBC: usize = 19;
    pub(crate) const LAB_CREAT: usize = 20;
    pub(crate) const LAB_GLUCOSE: usize = 21;
}

/// LOINC observation codes: (code, description, UCUM unit).
pub(crate) const LOINC_CODES: &[(&str, &str, &str)] = &[
    ("8480-6", "Systolic blood pressure", "mm[Hg]"),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]"),
    ("8867-4", "Heart rate", "/min"),
    ("8310-5", "Body temperature", "Cel"),
    ("59408-5", "Oxygen saturation by pulse oximetry", "%"),
    ("29463-7", "Body weight", "kg"),
    ("8302-2", "Body height", "cm"),
    ("39156-5", "Body mass index", "kg/m2"),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%"),
    (
        "2345-7",
        "Glucose [Mass/volume] in Serum or Plasma",
        "mg/dL",
    ),
    (
        "2093-3",
        "Cholesterol [Mass/volume] in Serum or Plasma",
        "mg/dL",
    ),
    ("2085-9", "HDL Cholesterol", "mg/dL"),
    ("13457-7", "LDL Cholesterol (calculated)", "mg/dL"),
    (
        "2160-0",
        "Creatinine [Mass/volume] in Serum or Plasma",
        "mg/dL",
    ),
    ("33914-3", "eGFR (MDRD)", "mL/min/{1.73_m2}"),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL"),
    ("6690-2", "Leukocytes [#/volume] in Blood", "10*3/uL"),
    (
        "2951-2",
        "Sodium [Moles/volume] in Serum or Plasma",
        "mmol/L",
    ),
    (
        "2823-3",
        "Potassium [Moles/volume] in Serum or Plasma",
        "mmol/L",
    ),
];

/// Index of a LOINC code in [`LOINC_CODES`].
pub(crate) mod loinc {
    pub(crate) const SYSTOLIC: usize = 0;
    pub(crate) const DIASTOLIC: usize = 1;
    pub(crate) const HEART_RATE: usize = 2;
    pub(crate) const TEMP: usize = 3;
    pub(crate) const SPO2: usize = 4;
    pub(crate) const WEIGHT: usize = 5;
    pub(crate) const HEIGHT: usize = 6;
    pub(crate) const BMI: usize = 7;
    pub(crate) const HBA1C: usize = 8;
    pub(crate) const GLUCOSE: usize = 9;
    pub(crate) const CHOL: usize = 10;
    pub(crate) const HDL: usize = 11;
    pub(crate) const LDL: usize = 12;
    pub(crate) const CREATININE: usize = 13;
    pub(crate) const EGFR: usize = 14;
    pub(crate) const HEMOGLOBIN: usize = 15;
    pub(crate) const WBC: usize = 16;
    pub(crate) const SODIUM: usize = 17;
    pub(crate) const POTASSIUM: usize = 18;
}

pub(crate) const ENCOUNTER_TYPES: [&str; 3] = ["inpatient", "outpatient", "emergency"];
pub(crate) const CLAIM_STATUSES: [&str; 3] = ["paid", "denied", "pending"];
pub(crate) const CONSENT_PURPOSES: [&str; 4] = ["treatment", "payment", "operations", "research"];
pub(crate) const SEXES: [&str; 3] = ["F", "M", "U"];
