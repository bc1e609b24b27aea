-- A researcher sees encounter ids only as keyed pseudonyms (63-bit), and
-- record ids are opaque, so no client can compute one: the lookup binds a
-- pseudonym-shaped value, which (almost surely) matches no row and costs
-- what a lookup by a known pseudonym costs (a masked column cannot prune).
\set id random(1, 4611686018427387903)
SELECT encounter_id, patient_id, admit_ts, encounter_type, primary_dx FROM clinical.encounters WHERE encounter_id = :id;
