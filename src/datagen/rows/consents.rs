//! Consent records of a patient, per purpose of use.

use crate::datagen::vocab;

use super::patient::Patient;
use super::{ANCHOR_TS, Gen, MICROS_PER_DAY};

impl<'a> Gen<'a> {
    pub(super) fn consents_for(&mut self, p: &Patient) {
        let r = &mut self.r;
        let earliest =
            (ANCHOR_TS - 10 * 365 * MICROS_PER_DAY).max(p.birth_day as i64 * MICROS_PER_DAY);
        for (purpose_idx, purpose) in vocab::CONSENT_PURPOSES.iter().enumerate() {
            let research = purpose_idx == 3;
            let u = r.unit();
            let n = if research {
                if u < 0.20 {
                    0
                } else if u < 0.75 {
                    1
                } else if u < 0.92 {
                    2
                } else {
                    3
                }
            } else if u < 0.08 {
                0
            } else if u < 0.82 {
                1
            } else if u < 0.96 {
                2
            } else {
                3
            };
            if n == 0 {
                continue;
            }
            self.ts_scratch.clear();
            for _ in 0..n {
                self.ts_scratch.push(r.range(earliest, ANCHOR_TS));
            }
            self.ts_scratch.sort_unstable();
            // The latest record decides; earlier ones may say the opposite.
            let final_granted = if research {
                r.chance(0.45)
            } else {
                !r.chance(0.035)
            };
            for (i, &recorded) in self.ts_scratch.iter().enumerate() {
                let granted = if i + 1 == n {
                    final_granted
                } else if r.chance(0.6) {
                    !final_granted
                } else {
                    final_granted
                };
                let p_expiring = if research { 0.45 } else { 0.12 };
                let expires = if r.chance(p_expiring) {
                    let years = if research {
                        r.range(2, 7)
                    } else {
                        r.range(1, 4)
                    };
                    Some(recorded + years * 365 * MICROS_PER_DAY)
                } else {
                    None
                };
                let c = &mut self.consents;
                c.patient.push(p.id);
                c.purpose.append_value(purpose);
                c.granted.push(granted);
                c.recorded.push(recorded);
                c.expires.append_option(expires);
            }
        }
    }
}
