-- postdesk's PostgreSQL schema, version 1. Records are JSON (`json`: kept as
-- written, cheaper to insert than jsonb; `->>` works on both) beside
-- the columns the queries and constraints need; times are Unix seconds.

CREATE TABLE meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO meta (key, value) VALUES ('next_ticket', '1');

CREATE TABLE tickets (
    id bigint PRIMARY KEY,
    status smallint NOT NULL,
    queue text NOT NULL,
    assignee text,
    requester text NOT NULL,          -- lower-cased address
    updated bigint NOT NULL,
    active boolean NOT NULL,
    version bigint NOT NULL DEFAULT 1,   -- each write from a read of the one before
    data json NOT NULL
);
CREATE INDEX tickets_status ON tickets (status, id);
CREATE INDEX tickets_queue ON tickets (queue, id);
CREATE INDEX tickets_assignee ON tickets (assignee, id) WHERE assignee IS NOT NULL;
CREATE INDEX tickets_requester ON tickets (requester, id);
CREATE INDEX tickets_updated ON tickets (updated, id);
CREATE INDEX tickets_active ON tickets (id) WHERE active;

-- Tickets per (status, queue) and active tickets per agent, kept by trigger.
CREATE TABLE ticket_counts (
    status smallint NOT NULL,
    queue text NOT NULL,
    tickets bigint NOT NULL,
    PRIMARY KEY (status, queue)
);
CREATE TABLE agent_loads (
    agent text PRIMARY KEY,
    tickets bigint NOT NULL
);

CREATE FUNCTION postdesk_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status = NEW.status AND OLD.queue = NEW.queue
       AND OLD.assignee IS NOT DISTINCT FROM NEW.assignee AND OLD.active = NEW.active THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE ticket_counts SET tickets = tickets - 1 WHERE status = OLD.status AND queue = OLD.queue;
        DELETE FROM ticket_counts WHERE status = OLD.status AND queue = OLD.queue AND tickets <= 0;
        IF OLD.active AND OLD.assignee IS NOT NULL THEN
            UPDATE agent_loads SET tickets = tickets - 1 WHERE agent = OLD.assignee;
            DELETE FROM agent_loads WHERE agent = OLD.assignee AND tickets <= 0;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO ticket_counts (status, queue, tickets) VALUES (NEW.status, NEW.queue, 1)
            ON CONFLICT (status, queue) DO UPDATE SET tickets = ticket_counts.tickets + 1;
        IF NEW.active AND NEW.assignee IS NOT NULL THEN
            INSERT INTO agent_loads (agent, tickets) VALUES (NEW.assignee, 1)
                ON CONFLICT (agent) DO UPDATE SET tickets = agent_loads.tickets + 1;
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tickets_count AFTER INSERT OR DELETE ON tickets
    FOR EACH ROW EXECUTE FUNCTION postdesk_count();
-- Most updates change none of the counted columns: those do not call the function.
CREATE TRIGGER tickets_recount AFTER UPDATE ON tickets
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.queue IS DISTINCT FROM NEW.queue
        OR OLD.assignee IS DISTINCT FROM NEW.assignee OR OLD.active IS DISTINCT FROM NEW.active)
    EXECUTE FUNCTION postdesk_count();

CREATE TABLE messages (
    seq bigserial PRIMARY KEY,
    ticket bigint NOT NULL,
    blob text,
    data json NOT NULL
);
CREATE INDEX messages_ticket ON messages (ticket, seq);
CREATE INDEX messages_blob ON messages (blob) WHERE blob IS NOT NULL;

CREATE TABLE events (
    seq bigserial PRIMARY KEY,
    ticket bigint NOT NULL,
    at bigint NOT NULL,
    data json NOT NULL
);
CREATE INDEX events_ticket ON events (ticket, seq);
CREATE INDEX events_at ON events (at, ticket);

-- Message-ID → ticket. A stored message's id is taken once: a second
-- instance storing the same mail fails its commit and finds a duplicate.
CREATE TABLE msgids (
    id text PRIMARY KEY,
    ticket bigint NOT NULL,
    stored boolean NOT NULL,
    hash text
);
CREATE TABLE hashes (hash text PRIMARY KEY);
CREATE TABLE sources (key text PRIMARY KEY, blob text NOT NULL);
CREATE TABLE positions (
    mailbox text PRIMARY KEY,
    uid_validity bigint NOT NULL,
    last_uid bigint NOT NULL
);

CREATE TABLE outbox (
    lane smallint NOT NULL,
    seq bigserial NOT NULL,
    entry json NOT NULL,
    claimed_by text,                  -- the instance sending it
    claimed_until bigint,             -- until then
    PRIMARY KEY (lane, seq)
);

CREATE TABLE quarantine (
    seq bigserial PRIMARY KEY,
    blob text NOT NULL,
    data json NOT NULL
);
CREATE INDEX quarantine_blob ON quarantine (blob);

CREATE TABLE acks (address text NOT NULL, at bigint NOT NULL);
CREATE INDEX acks_address ON acks (address, at);
CREATE TABLE suppress (address text PRIMARY KEY, until bigint NOT NULL);

CREATE TABLE timers (
    at bigint NOT NULL,
    ticket bigint NOT NULL,
    kind smallint NOT NULL,
    PRIMARY KEY (at, ticket, kind)
);

-- Raw mail, content-addressed (SHA-256, hex): every instance sees it.
CREATE TABLE blobs (
    key text PRIMARY KEY,
    data bytea NOT NULL,
    created bigint NOT NULL
);
-- Out of line and not compressed: mail is mostly base64 and pglz on every
-- insert cost more than the whole rest of a mail's commit.
ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL;

-- Mailbox and timer leases: one holder each, renewed before `expires`.
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires bigint NOT NULL
);

CREATE SEQUENCE nonces;

-- A write that finds another instance's change first fails its whole
-- commit with a serialisation failure; postdesk processes the mail again.
CREATE FUNCTION postdesk_conflict(reason text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = reason;
END $$;
