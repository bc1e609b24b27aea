//! Observations of an encounter: vital signs and lab panels.

use crate::datagen::vocab::{self, loinc};

use super::columns::ObservationCols;
use super::keys::IdKeys;
use super::patient::Patient;
use super::random::{Rand, round_to};
use super::{
    ET_EMERGENCY, ET_OUTPATIENT, Gen, Labs, MAX_OBS_PER_ENCOUNTER, MICROS_PER_DAY,
    MICROS_PER_MINUTE,
};

impl<'a> Gen<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn observations_for(
        &mut self,
        p: &Patient,
        enc_id: i64,
        enc_index: u64,
        et: u8,
        preventive: bool,
        admit: i64,
        end: i64,
    ) -> Labs {
        let mut o = ObsEmitter {
            ids: self.ids,
            seq: 0,
            enc_id,
            enc_index,
            admit,
            dur: (end - admit).max(MICROS_PER_MINUTE),
        };
        let cols = &mut self.observations;
        let r = &mut self.r;
        let mut labs = Labs::default();
        let diabetic = p.has(vocab::COND_DIABETES);
        let child = p.age < 18;
        match et {
            ET_OUTPATIENT => {
                let f = (0.02, 0.25);
                if preventive {
                    o.vital(cols, r, p, loinc::SYSTOLIC, f);
                    o.vital(cols, r, p, loinc::DIASTOLIC, f);
                    o.vital(cols, r, p, loinc::HEART_RATE, f);
                    o.vital(cols, r, p, loinc::WEIGHT, f);
                    if r.chance(0.5) {
                        o.vital(cols, r, p, loinc::HEIGHT, f);
                        o.vital(cols, r, p, loinc::BMI, f);
                    }
                    if !child {
                        labs.lipid = r.chance(0.35);
                        labs.a1c = (p.age >= 35 || diabetic) && r.chance(0.3);
                        labs.cbc = r.chance(0.2);
                        labs.cmp = r.chance(0.2);
                    }
                } else {
                    if r.chance(0.75) {
                        o.vital(cols, r, p, loinc::SYSTOLIC, f);
                        o.vital(cols, r, p, loinc::DIASTOLIC, f);
                    }
                    if r.chance(0.3) {
                        o.vital(cols, r, p, loinc::HEART_RATE, f);
                    }
                    if r.chance(if child { 0.6 } else { 0.2 }) {
                        o.vital(cols, r, p, loinc::WEIGHT, f);
                    }
                    if r.chance(0.05) {
                        o.vital(cols, r, p, loinc::BMI, f);
                    }
                    if r.chance(0.06) {
                        o.vital(cols, r, p, loinc::TEMP, f);
                    }
                    let resp = p.has(vocab::COND_ASTHMA) || p.has(vocab::COND_COPD);
                    if r.chance(if resp { 0.4 } else { 0.03 }) {
                        o.vital(cols, r, p, loinc::SPO2, f);
                    }
                    if diabetic {
                        labs.a1c = r.chance(0.45);
                        labs.glucose = r.chance(0.2);
                    } else if p.age >= 35 {
                        labs.a1c = r.chance(0.03);
                        labs.glucose = r.chance(0.04);
                    }
                    labs.lipid = r.chance(if p.has(vocab::COND_HLD) {
                        0.2
                    } else if p.age >= 40 {
                        0.03
                    } else {
                        0.0
                    });
                    labs.creat = r.chance(if p.has(vocab::COND_CKD) { 0.4 } else { 0.02 });
                    labs.bmp = r.chance(if p.has(vocab::COND_HTN) { 0.08 } else { 0.03 });
                    labs.cbc = r.chance(0.04);
                }
                o.labs(cols, r, p, &labs, (0.3, 0.95), false);
            }
            ET_EMERGENCY => {
                let f = (0.01, 0.15);
                for (code, p_vital) in [
                    (loinc::SYSTOLIC, 0.9),
                    (loinc::DIASTOLIC, 0.9),
                    (loinc::HEART_RATE, 0.9),
                    (loinc::TEMP, 0.6),
                    (loinc::SPO2, 0.6),
                ] {
                    if r.chance(p_vital) {
                        o.vital(cols, r, p, code, f);
                    }
                }
                labs.cbc = r.chance(0.35);
                labs.bmp = r.chance(0.25);
                labs.glucose = r.chance(if diabetic { 0.5 } else { 0.08 });
                labs.creat = !labs.bmp && r.chance(0.1);
                o.labs(cols, r, p, &labs, (0.2, 0.9), true);
            }
            _ => {
                // Inpatient: a round of vitals (and often labs) per hospital day, up to 2.
                let days = ((end - admit) / MICROS_PER_DAY).clamp(0, 1) + 1;
                for d in 0..days {
                    let lo = d as f64 / days as f64;
                    let hi = (d + 1) as f64 / days as f64;
                    let f = (lo, lo + (hi - lo) * 0.3);
                    for code in [
                        loinc::SYSTOLIC,
                        loinc::DIASTOLIC,
                        loinc::HEART_RATE,
                        loinc::TEMP,
                    ] {
                        o.vital(cols, r, p, code, f);
                    }
                    if r.chance(0.5) {
                        o.vital(cols, r, p, loinc::SPO2, f);
                    }
                    let mut day_labs = Labs {
                        cbc: r.chance(if d == 0 { 0.7 } else { 0.2 }),
                        bmp: r.chance(if d == 0 { 0.6 } else { 0.2 }),
                        glucose: diabetic && r.chance(0.6),
                        a1c: d == 0 && diabetic && r.chance(0.5),
                        ..Labs::default()
                    };
                    day_labs.creat = !day_labs.bmp && r.chance(0.2);
                    o.labs(
                        cols,
                        r,
                        p,
                        &day_labs,
                        (lo + (hi - lo) * 0.35, hi * 0.999),
                        true,
                    );
                    labs.cbc |= day_labs.cbc;
                    labs.bmp |= day_labs.bmp;
                    labs.glucose |= day_labs.glucose;
                    labs.a1c |= day_labs.a1c;
                    labs.creat |= day_labs.creat;
                }
            }
        }
        labs
    }
}

struct ObsEmitter<'a> {
    ids: &'a IdKeys,
    seq: i64,
    enc_id: i64,
    enc_index: u64,
    admit: i64,
    dur: i64,
}

impl ObsEmitter<'_> {
    #[inline]
    fn push(
        &mut self,
        cols: &mut ObservationCols,
        r: &mut Rand,
        p: &Patient,
        code: usize,
        value: f64,
        frac: (f64, f64),
    ) {
        if self.seq >= MAX_OBS_PER_ENCOUNTER {
            return;
        }
        self.seq += 1;
        let f = frac.0 + (frac.1 - frac.0) * r.unit();
        let (c, _, unit) = vocab::LOINC_CODES[code];
        cols.id
            .push(self.ids.observation_id(self.enc_index, self.seq));
        cols.patient.push(p.id);
        cols.encounter.push(self.enc_id);
        cols.code.append_value(c);
        cols.value.push(value);
        cols.unit.append_value(unit);
        cols.at.push(self.admit + (self.dur as f64 * f) as i64);
    }

    fn vital(
        &mut self,
        cols: &mut ObservationCols,
        r: &mut Rand,
        p: &Patient,
        code: usize,
        frac: (f64, f64),
    ) {
        let v = match code {
            loinc::SYSTOLIC => (p.sys + r.gauss(0.0, 8.0)).clamp(70.0, 230.0).round(),
            loinc::DIASTOLIC => (p.dia + r.gauss(0.0, 6.0)).clamp(35.0, 140.0).round(),
            loinc::HEART_RATE => (p.hr + r.gauss(0.0, 8.0)).clamp(35.0, 190.0).round(),
            loinc::TEMP => {
                if r.chance(0.08) {
                    round_to(r.gauss(38.6, 0.5).clamp(37.6, 41.0), 1)
                } else {
                    round_to(r.gauss(36.8, 0.3), 1)
                }
            }
            loinc::SPO2 => {
                let base = if p.has(vocab::COND_COPD) { 93.5 } else { 97.5 };
                (base + r.gauss(0.0, 1.3)).clamp(80.0, 100.0).round()
            }
            loinc::WEIGHT => {
                let h = p.height_cm / 100.0;
                round_to((p.bmi * h * h + r.gauss(0.0, 1.0)).max(2.0), 1)
            }
            loinc::HEIGHT => round_to(p.height_cm + r.gauss(0.0, 0.5), 1),
            loinc::BMI => round_to(p.bmi + r.gauss(0.0, 0.4), 1),
            _ => unreachable!("not a vital sign"),
        };
        self.push(cols, r, p, code, v, frac);
    }

    fn labs(
        &mut self,
        cols: &mut ObservationCols,
        r: &mut Rand,
        p: &Patient,
        labs: &Labs,
        frac: (f64, f64),
        acute: bool,
    ) {
        if labs.a1c {
            let v = round_to((p.a1c + r.gauss(0.0, 0.35)).clamp(4.0, 15.0), 1);
            self.push(cols, r, p, loinc::HBA1C, v, frac);
        }
        if labs.glucose || labs.bmp || labs.cmp {
            let eag = 28.7 * p.a1c - 46.7;
            let v = (eag + r.gauss(0.0, 18.0) + if acute { 15.0 } else { 0.0 })
                .clamp(45.0, 550.0)
                .round();
            self.push(cols, r, p, loinc::GLUCOSE, v, frac);
        }
        if labs.lipid {
            let chol = (p.chol + r.gauss(0.0, 12.0)).clamp(90.0, 400.0).round();
            let hdl = (p.hdl + r.gauss(0.0, 4.0)).clamp(15.0, 120.0).round();
            let trig = r.gauss(140.0, 40.0).clamp(40.0, 500.0);
            let ldl = (chol - hdl - trig / 5.0).max(20.0).round();
            self.push(cols, r, p, loinc::CHOL, chol, frac);
            self.push(cols, r, p, loinc::HDL, hdl, frac);
            self.push(cols, r, p, loinc::LDL, ldl, frac);
        }
        if labs.bmp || labs.cmp {
            let na = r.gauss(140.0, 2.5).round();
            let k = round_to(r.gauss(4.2, 0.35).clamp(2.5, 6.5), 1);
            self.push(cols, r, p, loinc::SODIUM, na, frac);
            self.push(cols, r, p, loinc::POTASSIUM, k, frac);
        }
        if labs.bmp || labs.cmp || labs.creat {
            let creat = round_to((p.creat + r.gauss(0.0, 0.08)).clamp(0.2, 9.0), 2);
            self.push(cols, r, p, loinc::CREATININE, creat, frac);
            if p.age >= 18 {
                let mut egfr = 175.0 * creat.powf(-1.154) * (p.age as f64).powf(-0.203);
                if p.sex == 0 {
                    egfr *= 0.742;
                }
                self.push(
                    cols,
                    r,
                    p,
                    loinc::EGFR,
                    egfr.clamp(4.0, 150.0).round(),
                    frac,
                );
            }
        }
        if labs.cbc {
            let hgb = round_to((p.hgb + r.gauss(0.0, 0.5)).clamp(5.0, 20.0), 1);
            let wbc = if acute {
                r.gauss(9.5, 3.0)
            } else {
                r.gauss(7.0, 1.8)
            };
            self.push(cols, r, p, loinc::HEMOGLOBIN, hgb, frac);
            self.push(
                cols,
                r,
                p,
                loinc::WBC,
                round_to(wbc.clamp(1.5, 30.0), 1),
                frac,
            );
        }
    }
}
