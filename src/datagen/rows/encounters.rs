//! Encounters: how many a patient has, when, where and why.

use crate::datagen::vocab;

use super::keys::IdKeys;
use super::patient::Patient;
use super::{
    ANCHOR_DAY, ANCHOR_TS, ET_EMERGENCY, ET_INPATIENT, ET_OUTPATIENT, Gen,
    MAX_ENCOUNTERS_PER_PATIENT, MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_MINUTE,
    MICROS_PER_SECOND, NPIS_PER_SITE,
};

impl<'a> Gen<'a> {
    pub(super) fn encounters_for(&mut self, p: &Patient) {
        let r = &mut self.r;
        let n_cond = p.conditions.count_ones().min(4) as f64;
        let mean = match p.age {
            0..=1 => 5.0,
            2..=17 => 2.2,
            18..=44 => 2.8,
            45..=64 => 4.2,
            _ => 6.5,
        } + 0.9 * n_cond;
        let n = ((r.exp(mean) + 0.5) as usize).min(MAX_ENCOUNTERS_PER_PATIENT);

        let window_start = (ANCHOR_DAY - 5 * 365).max(p.birth_day);
        let window_days = (ANCHOR_DAY - window_start).max(1) as u32;
        let p_inpatient = if p.age >= 65 { 0.07 } else { 0.04 };
        self.enc_scratch.clear();
        for _ in 0..n {
            let u = r.unit();
            let et = if u < p_inpatient {
                ET_INPATIENT
            } else if u < p_inpatient + 0.14 {
                ET_EMERGENCY
            } else {
                ET_OUTPATIENT
            };
            let day = window_start as i64 + r.below(window_days) as i64;
            let tod = match et {
                // clinic slots 08:00-16:45, every 15 minutes
                ET_OUTPATIENT => 8 * MICROS_PER_HOUR + r.below(36) as i64 * 15 * MICROS_PER_MINUTE,
                _ => r.below(86_400) as i64 * MICROS_PER_SECOND,
            };
            self.enc_scratch.push((day * MICROS_PER_DAY + tod, et));
        }
        // A few patients are in hospital right now (open inpatient encounter).
        let p_current = if p.age >= 65 { 0.015 } else { 0.003 };
        let current_admission =
            r.chance(p_current) && self.enc_scratch.len() < MAX_ENCOUNTERS_PER_PATIENT;
        if current_admission {
            let admit = ANCHOR_TS - r.range(2 * MICROS_PER_HOUR, 4 * MICROS_PER_DAY);
            self.enc_scratch
                .push((admit.max(p.birth_day as i64 * MICROS_PER_DAY), ET_INPATIENT));
        }
        self.enc_scratch.sort_unstable();

        let home = p.site;
        let mut scratch = std::mem::take(&mut self.enc_scratch);
        for (k, &(admit, et)) in scratch.iter().enumerate() {
            let is_current = current_admission
                && k + 1 == scratch.len()
                && et == ET_INPATIENT
                && admit > ANCHOR_TS - 5 * MICROS_PER_DAY;
            self.encounter(p, k, admit, et, home, is_current);
        }
        scratch.clear();
        self.enc_scratch = scratch;
    }

    #[allow(clippy::too_many_arguments)]
    fn encounter(
        &mut self,
        p: &Patient,
        k: usize,
        admit: i64,
        et: u8,
        home: usize,
        is_current: bool,
    ) {
        let enc_index = IdKeys::encounter_index(p.id, k);
        let enc_id = self.ids.encounter_id(enc_index);
        let r = &mut self.r;
        let site = if r.chance(0.85) {
            home
        } else {
            let s = r.idx(11);
            if s >= home { s + 1 } else { s }
        };
        let planned_discharge = match et {
            ET_OUTPATIENT => admit + (15 + r.below(76) as i64) * MICROS_PER_MINUTE,
            ET_EMERGENCY => admit + r.range(2 * MICROS_PER_HOUR, 12 * MICROS_PER_HOUR),
            _ => {
                let days = (1.0 + r.exp(3.0)).min(30.0);
                admit + (days * MICROS_PER_DAY as f64) as i64
            }
        };
        // Open encounters: still admitted at the anchor, or (rarely) never closed in the EHR.
        let discharge = if is_current || planned_discharge > ANCHOR_TS || r.chance(0.002) {
            None
        } else {
            Some(planned_discharge)
        };
        let end = discharge.unwrap_or_else(|| {
            planned_discharge
                .min(ANCHOR_TS)
                .max(admit + MICROS_PER_HOUR)
        });

        // Primary diagnosis.
        let preventive = et == ET_OUTPATIENT && r.chance(0.12);
        let dx: &'static str = if preventive {
            if p.age < 18 {
                vocab::DX_CHILD_EXAM
            } else {
                vocab::DX_ADULT_EXAM
            }
        } else {
            let p_chronic = match et {
                ET_OUTPATIENT => 0.6,
                ET_EMERGENCY => 0.15,
                _ => 0.5,
            };
            if p.conditions != 0 && r.chance(p_chronic) {
                let mut flags = [0usize; 10];
                let mut m = 0;
                for (i, (flag, _)) in vocab::CHRONIC_DX.iter().enumerate() {
                    if p.has(*flag) {
                        flags[m] = i;
                        m += 1;
                    }
                }
                let i = flags[r.idx(m)];
                if i == 0 && p.a1c >= 9.0 {
                    vocab::DX_DIABETES_HYPERGLYCEMIA
                } else {
                    vocab::CHRONIC_DX[i].1
                }
            } else {
                match et {
                    ET_OUTPATIENT => {
                        if p.age < 12 && r.chance(0.25) {
                            "H66.90"
                        } else {
                            r.pick(vocab::OUTPATIENT_ACUTE_DX)
                        }
                    }
                    ET_EMERGENCY => r.pick(vocab::EMERGENCY_DX),
                    _ => r.pick(vocab::INPATIENT_DX),
                }
            }
        };
        let npi_idx = site * NPIS_PER_SITE + r.idx(NPIS_PER_SITE);

        let e = &mut self.encounters;
        e.id.push(enc_id);
        e.patient.push(p.id);
        e.site.append_value(vocab::SITES[site].id);
        e.admit.push(admit);
        e.discharge.append_option(discharge);
        e.etype.append_value(vocab::ENCOUNTER_TYPES[et as usize]);
        e.dx.append_value(dx);
        e.npi.append_value(&self.providers.npis[npi_idx]);

        let labs = self.observations_for(p, enc_id, enc_index, et, preventive, admit, end);
        if !(et == ET_INPATIENT && discharge.is_none()) {
            self.claims_for(p, enc_index, et, preventive, k == 0, site, admit, dx, &labs);
        }
    }
}
