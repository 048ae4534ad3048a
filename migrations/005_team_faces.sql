-- Faces projected from a group photo by /team: nobody's "me" until a member /claims one.
-- Visible only in the channel where /team ran; deleted when claimed, when they expire
-- (limits.team_face_hours), or when the member who ran /team uses /forget.
CREATE TABLE team_faces (
    team_id TEXT NOT NULL,
    number INTEGER NOT NULL,          -- 1 = the largest face of the photo, as on the montage
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    owner_id INTEGER NOT NULL,        -- the member who ran /team
    model_id TEXT NOT NULL,
    num_ws INTEGER NOT NULL,
    w_dim INTEGER NOT NULL,
    ws BLOB NOT NULL,
    noise BLOB,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (team_id, number)
);
CREATE INDEX team_faces_channel ON team_faces (guild_id, channel_id, created_at);
CREATE INDEX team_faces_expiry ON team_faces (expires_at);
