-- Which projector kept each face (engine.protocol.PROJECTOR). Faces kept before the projector
-- kept W+ near W hold NULL: their blends, morphs and edits melt. Nothing about those faces
-- changes; their member is told once (refresh_told) that a fresh /project gives better ones.
ALTER TABLE latents ADD COLUMN projector INTEGER;
ALTER TABLE latents ADD COLUMN refresh_told INTEGER NOT NULL DEFAULT 0;
ALTER TABLE team_faces ADD COLUMN projector INTEGER;
