-- What the bot needs to reach a member again about a job it could not finish (a crash, a
-- kill): the interaction's application id and token (valid 15 minutes, cleared as soon as
-- the job ends) and the channel, for a follow-up once the token has expired.
ALTER TABLE jobs ADD COLUMN application_id INTEGER;
ALTER TABLE jobs ADD COLUMN interaction_token TEXT;
ALTER TABLE jobs ADD COLUMN channel_id INTEGER;
