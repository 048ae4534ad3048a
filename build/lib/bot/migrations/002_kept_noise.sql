-- A kept face is W+ and the projector's noise maps (engine/kept.py): float16,
-- little-endian, packed layer after layer. NULL: the model's constant maps (rows from
-- before this migration, and /random faces), which render as they always did.
ALTER TABLE latents ADD COLUMN noise BLOB;
ALTER TABLE pending_latents ADD COLUMN noise BLOB;
