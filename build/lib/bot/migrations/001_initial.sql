-- Members of a server, their consent to share, and their W+ latents (one per model).
CREATE TABLE members (
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    share      INTEGER NOT NULL DEFAULT 0 CHECK (share IN (0, 1)),
    created_at REAL    NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE latents (
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    model_id   TEXT    NOT NULL,
    num_ws     INTEGER NOT NULL,
    w_dim      INTEGER NOT NULL,
    ws         BLOB    NOT NULL,  -- float32, little-endian, num_ws * w_dim values
    source     TEXT    NOT NULL,  -- project, adopt, ...
    created_at REAL    NOT NULL,
    PRIMARY KEY (guild_id, user_id, model_id),
    FOREIGN KEY (guild_id, user_id) REFERENCES members (guild_id, user_id) ON DELETE CASCADE
);

-- The last /random face of a member, which /adopt turns into their latent.
CREATE TABLE pending_latents (
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    model_id   TEXT    NOT NULL,
    ws         BLOB    NOT NULL,
    created_at REAL    NOT NULL,
    PRIMARY KEY (guild_id, user_id),
    FOREIGN KEY (guild_id, user_id) REFERENCES members (guild_id, user_id) ON DELETE CASCADE
);

CREATE TABLE jobs (
    id          TEXT    PRIMARY KEY,
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    created_at  REAL    NOT NULL,
    started_at  REAL,
    finished_at REAL,
    error       TEXT
);
CREATE INDEX jobs_by_member ON jobs (guild_id, user_id);
CREATE INDEX jobs_by_status ON jobs (status);

CREATE TABLE guild_settings (
    guild_id INTEGER PRIMARY KEY,
    settings TEXT NOT NULL DEFAULT '{}'
);
