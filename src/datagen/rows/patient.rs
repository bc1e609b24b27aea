//! The patient model: demographics, chronic conditions and physiological
//! baselines drawn per patient, and the patient row.

use std::fmt::Write as _;

use crate::datagen::vocab;

use super::keys::{write_mrn, write_ssn};
use super::{Gen, days_from_civil, is_leap};

pub(super) struct Patient {
    pub(super) id: i64,
    pub(super) site: usize,
    pub(super) age: i32,
    pub(super) birth_day: i32,
    pub(super) sex: usize, // index into vocab::SEXES
    pub(super) conditions: u16,
    pub(super) payer: u8,
    // physiological baselines
    pub(super) sys: f64,
    pub(super) dia: f64,
    pub(super) hr: f64,
    pub(super) height_cm: f64,
    pub(super) bmi: f64,
    pub(super) a1c: f64,
    pub(super) chol: f64,
    pub(super) hdl: f64,
    pub(super) creat: f64,
    pub(super) hgb: f64,
}

impl Patient {
    pub(super) fn has(&self, c: u16) -> bool {
        self.conditions & c != 0
    }
}

/// Prevalence of each chronic condition (order of `vocab::CHRONIC_DX`) by age band.
const PREVALENCE: [[f64; 10]; 4] = [
    // diab  htn   asthma hld   ckd   copd  afib  hf    obes  depr
    [0.003, 0.01, 0.09, 0.01, 0.002, 0.0, 0.0, 0.001, 0.15, 0.03], // 0-17
    [
        0.04, 0.12, 0.08, 0.10, 0.01, 0.005, 0.003, 0.003, 0.30, 0.09,
    ], // 18-44
    [0.14, 0.38, 0.07, 0.35, 0.05, 0.05, 0.02, 0.02, 0.38, 0.09],  // 45-64
    [0.24, 0.60, 0.06, 0.50, 0.15, 0.11, 0.09, 0.08, 0.30, 0.07],  // 65+
];

fn push_alpha_lower(buf: &mut String, s: &str) {
    for c in s.chars() {
        if c.is_ascii_alphabetic() {
            buf.push(c.to_ascii_lowercase());
        }
    }
}

impl<'a> Gen<'a> {
    fn pick_site(&mut self) -> usize {
        let x = self.r.below(self.site_total);
        self.site_cum.iter().position(|&c| x < c).unwrap_or(11)
    }

    pub(super) fn patient(&mut self, id: i64) -> Patient {
        let r = &mut self.r;
        // Age at the anchor date: ~3% are over 89 (HIPAA Safe Harbor aggregation).
        let age: i32 = if r.chance(0.03) {
            90 + (r.exp(4.0) as i32).min(14)
        } else {
            let v = r.unit();
            if v < 0.21 {
                r.below(18) as i32
            } else if v < 0.78 {
                18 + r.below(47) as i32
            } else {
                65 + r.below(25) as i32
            }
        };
        // Born in year 2025 - age, so the age on 2026-01-01 is `age` (+1 if born Jan 1).
        let year = 2025 - age;
        let year_len = if is_leap(year) { 366 } else { 365 };
        let birth_day = days_from_civil(year, 1, 1) + r.below(year_len) as i32;

        let s = r.unit();
        let sex = if s < 0.495 {
            0
        } else if s < 0.993 {
            1
        } else {
            2
        };
        let band = match age {
            0..=17 => 0,
            18..=44 => 1,
            45..=64 => 2,
            _ => 3,
        };
        let mut conditions = 0u16;
        for (i, (flag, _)) in vocab::CHRONIC_DX.iter().enumerate() {
            if r.chance(PREVALENCE[band][i]) {
                conditions |= flag;
            }
        }
        let payer = if age >= 65 {
            let u = r.unit();
            if u < 0.86 {
                vocab::PAYER_MEDICARE
            } else if u < 0.98 {
                r.pick(&vocab::COMMERCIAL_PAYERS)
            } else {
                vocab::PAYER_SELF
            }
        } else {
            let medicaid = if age < 18 { 0.40 } else { 0.18 };
            let u = r.unit();
            if u < medicaid {
                vocab::PAYER_MEDICAID
            } else if u < medicaid + 0.06 {
                vocab::PAYER_SELF
            } else {
                r.pick(&vocab::COMMERCIAL_PAYERS)
            }
        };

        let has = |c: u16| conditions & c != 0;
        let child = age < 18;
        let sys = if child {
            r.gauss(102.0, 7.0)
        } else {
            112.0
                + 0.3 * (age - 20).max(0) as f64
                + if has(vocab::COND_HTN) { 14.0 } else { 0.0 }
                + r.gauss(0.0, 9.0)
        };
        let dia = if child {
            r.gauss(62.0, 6.0)
        } else {
            72.0 + if has(vocab::COND_HTN) { 8.0 } else { 0.0 } + r.gauss(0.0, 6.0)
        };
        let hr = if age < 10 {
            r.gauss(95.0, 12.0)
        } else {
            r.gauss(74.0, 9.0)
        };
        let height_cm = if child {
            (52.0 + age as f64 * 6.3 + r.gauss(0.0, 4.0)).min(185.0)
        } else {
            match sex {
                0 => r.gauss(162.0, 6.5),
                1 => r.gauss(176.0, 7.0),
                _ => r.gauss(169.0, 8.0),
            }
        };
        let bmi = if child {
            r.gauss(17.5, 2.5) + if has(vocab::COND_OBESITY) { 6.0 } else { 0.0 }
        } else {
            r.gauss(25.5, 4.0)
                + if has(vocab::COND_OBESITY) { 7.0 } else { 0.0 }
                + if has(vocab::COND_DIABETES) { 2.0 } else { 0.0 }
        }
        .clamp(13.0, 60.0);
        let a1c = if has(vocab::COND_DIABETES) {
            r.gauss(7.6, 1.3).clamp(5.8, 13.5)
        } else if !child && r.chance(0.12) {
            r.gauss(6.0, 0.2) // prediabetes
        } else {
            r.gauss(5.3, 0.3)
        };
        let chol = r.gauss(190.0, 30.0) + if has(vocab::COND_HLD) { 30.0 } else { 0.0 };
        let hdl = r.gauss(50.0, 11.0) + if sex == 0 { 8.0 } else { 0.0 };
        let creat = if has(vocab::COND_CKD) {
            r.gauss(1.8, 0.4)
        } else {
            r.gauss(0.85, 0.15) + if sex == 1 { 0.15 } else { 0.0 }
        }
        .max(0.3);
        let hgb = match sex {
            1 => r.gauss(15.0, 1.1),
            _ => r.gauss(13.4, 1.0),
        };
        let site = self.pick_site();
        Patient {
            id,
            site,
            age,
            birth_day,
            sex,
            conditions,
            payer,
            sys,
            dia,
            hr,
            height_cm,
            bmi,
            a1c,
            chol,
            hdl,
            creat,
            hgb,
        }
    }

    pub(super) fn emit_patient(&mut self, p: &Patient) {
        let r = &mut self.r;
        let cols = &mut self.patients;
        let buf = &mut self.buf;
        cols.id.push(p.id);
        buf.clear();
        write_mrn(buf, self.ids, p.id);
        cols.mrn.append_value(&*buf);
        let first = match p.sex {
            0 => r.pick(vocab::FEMALE_FIRST_NAMES),
            1 => r.pick(vocab::MALE_FIRST_NAMES),
            _ => {
                if r.chance(0.5) {
                    r.pick(vocab::FEMALE_FIRST_NAMES)
                } else {
                    r.pick(vocab::MALE_FIRST_NAMES)
                }
            }
        };
        let last = r.pick(vocab::LAST_NAMES);
        cols.first.append_value(first);
        cols.last.append_value(last);
        if r.chance(0.02) {
            cols.ssn.append_null();
        } else {
            buf.clear();
            write_ssn(buf, self.ids, p.id);
            cols.ssn.append_value(&*buf);
        }
        cols.birth.push(p.birth_day);
        cols.sex.append_value(vocab::SEXES[p.sex]);
        let site = &vocab::SITES[p.site];
        // Patients mostly live in their home site's area, sometimes elsewhere.
        let zip_site = if r.chance(0.9) {
            site
        } else {
            &vocab::SITES[r.idx(12)]
        };
        buf.clear();
        buf.push_str(r.pick(zip_site.zip3));
        let _ = write!(buf, "{:02}", r.below(100));
        cols.zip.append_value(&*buf);
        if r.chance(0.04) {
            cols.phone.append_null();
        } else {
            buf.clear();
            let _ = write!(buf, "{}-555-01{:02}", zip_site.area_code, r.below(100));
            cols.phone.append_value(&*buf);
        }
        if r.chance(0.10) {
            cols.email.append_null();
        } else {
            buf.clear();
            push_alpha_lower(buf, first);
            buf.push('.');
            push_alpha_lower(buf, last);
            let n = self.ids.email.apply(p.id as u64 - 1);
            let _ = write!(buf, "{n}@{}", r.pick(&vocab::EMAIL_DOMAINS));
            cols.email.append_value(&*buf);
        }
        cols.site.append_value(site.id);
        let p_dead = match p.age {
            90.. => 0.18,
            75..=89 => 0.07,
            65..=74 => 0.03,
            _ => 0.004,
        };
        cols.deceased.append_value(r.chance(p_dead));
    }
}
