//! Claim lines of an encounter: CPT items, amounts, payer and denials.

use crate::datagen::vocab::{self, cpt};

use super::patient::Patient;
use super::{ANCHOR_DAY, ET_EMERGENCY, ET_OUTPATIENT, Gen, Labs, MICROS_PER_DAY};

impl<'a> Gen<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn claims_for(
        &mut self,
        p: &Patient,
        enc_index: u64,
        et: u8,
        preventive: bool,
        first_visit: bool,
        site: usize,
        admit: i64,
        dx: &'static str,
        labs: &Labs,
    ) {
        let r = &mut self.r;
        let mut items: [usize; 9] = [usize::MAX; 9];
        let mut n = 0;
        if r.chance(0.96) {
            items[n] = match et {
                ET_OUTPATIENT if preventive => match p.age {
                    0..=17 => cpt::P99392,
                    18..=39 => cpt::P99395,
                    40..=64 => cpt::P99396,
                    _ => cpt::P99397,
                },
                ET_OUTPATIENT if first_visit && r.chance(0.4) => {
                    if r.chance(0.6) {
                        cpt::E99203
                    } else {
                        cpt::E99204
                    }
                }
                ET_OUTPATIENT => {
                    let u = r.unit();
                    if u < 0.10 {
                        cpt::E99212
                    } else if u < 0.60 {
                        cpt::E99213
                    } else if u < 0.92 {
                        cpt::E99214
                    } else {
                        cpt::E99215
                    }
                }
                ET_EMERGENCY => {
                    let u = r.unit();
                    if u < 0.35 {
                        cpt::ED99283
                    } else if u < 0.75 {
                        cpt::ED99284
                    } else {
                        cpt::ED99285
                    }
                }
                _ => {
                    if r.chance(0.45) {
                        cpt::IP99222
                    } else {
                        cpt::IP99223
                    }
                }
            };
            n += 1;
        }
        for (drawn, code) in [
            (labs.a1c, cpt::LAB_A1C),
            (labs.glucose && !labs.cmp, cpt::LAB_GLUCOSE),
            (labs.lipid, cpt::LAB_LIPID),
            (labs.bmp && !labs.cmp, cpt::LAB_BMP),
            (labs.cmp, cpt::LAB_CMP),
            (labs.cbc, cpt::LAB_CBC),
            (labs.creat, cpt::LAB_CREAT),
        ] {
            if drawn {
                items[n] = code;
                n += 1;
            }
        }

        let service_day = admit.div_euclid(MICROS_PER_DAY) as i32;
        let days_ago = ANCHOR_DAY - service_day;
        let c = &mut self.claims;
        for (j, &item) in items[..n].iter().enumerate() {
            let payer = if r.chance(0.04) {
                r.idx(vocab::PAYERS.len()) as u8
            } else {
                p.payer
            };
            let (code, _, base_cents) = vocab::CPT_CODES[item];
            let billed = (base_cents as f64 * (0.85 + 0.5 * r.unit())).round() as i128;
            let (p_pending, p_denied) = if days_ago < 30 {
                (0.6, 0.04)
            } else if days_ago < 90 {
                (0.08, 0.09)
            } else {
                (0.005, 0.095)
            };
            let u = r.unit();
            let status = if u < p_pending {
                2
            } else if u < p_pending + p_denied && payer != vocab::PAYER_SELF {
                1
            } else {
                0
            };
            let allowed = match status {
                0 => {
                    let factor = match payer {
                        vocab::PAYER_MEDICARE => r.gauss(0.42, 0.04),
                        vocab::PAYER_MEDICAID => r.gauss(0.33, 0.03),
                        vocab::PAYER_SELF => r.gauss(0.60, 0.05),
                        _ => r.gauss(0.62, 0.08),
                    }
                    .clamp(0.15, 1.0);
                    Some((billed as f64 * factor).round() as i128)
                }
                1 => Some(0),
                _ => None,
            };
            c.id.push(self.ids.claim_id(enc_index, j));
            c.patient.push(p.id);
            c.site.append_value(vocab::SITES[site].id);
            c.payer.append_value(vocab::PAYERS[payer as usize]);
            c.service_date.push(service_day);
            c.cpt.append_value(code);
            c.icd10.append_value(dx);
            c.billed.push(billed);
            c.allowed.append_option(allowed);
            c.status.append_value(vocab::CLAIM_STATUSES[status]);
            if status == 1 {
                c.denial.append_value(r.pick(vocab::DENIAL_REASONS));
            } else {
                c.denial.append_null();
            }
        }
    }
}
