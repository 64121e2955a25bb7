"""The numbered, named schema migrations; db.migrate runs each once and records it."""

from __future__ import annotations

# Numbered, named migrations; each runs once, in its own transaction, and is recorded.
# Never edit one that has shipped: add the next number.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        8,
        "outbox by the mail it answers",
        """
        -- The review list asks, per mail, whether it was already answered.
        CREATE INDEX outbox_by_source ON outbox (source_message);
        """,
    ),
    (
        1,
        "registry, messages, outbox and event log",
        """
        CREATE TABLE mailbox_state (
            folder       TEXT PRIMARY KEY,
            uidvalidity  INTEGER NOT NULL,
            last_uid     INTEGER NOT NULL,
            updated_at   TEXT NOT NULL
        );

        -- Every mail fetched, raw, exactly once. identity is the Message-ID, or a hash of the
        -- bytes when there is none, so a re-poll or a UIDVALIDITY reset adds no second row.
        CREATE TABLE messages (
            id               INTEGER PRIMARY KEY,
            identity         TEXT NOT NULL UNIQUE,
            folder           TEXT NOT NULL,
            uidvalidity      INTEGER NOT NULL,
            uid              INTEGER NOT NULL,
            message_id       TEXT,
            arrived_at       TEXT NOT NULL,   -- the server's INTERNALDATE, UTC
            first_seen_at    TEXT NOT NULL,   -- when we fetched it (INTERNALDATE can be client-set)
            size             INTEGER NOT NULL,
            raw              BLOB NOT NULL,
            state            TEXT NOT NULL DEFAULT 'new'
                             CHECK (state IN ('new', 'processed', 'review', 'quarantined')),
            kind             TEXT,
            reading          TEXT,            -- the understanding, as JSON
            error            TEXT,
            processed_at     TEXT,
            marked_on_server INTEGER NOT NULL DEFAULT 0,
            UNIQUE (folder, uidvalidity, uid)
        );
        CREATE INDEX messages_by_state ON messages (state, arrived_at, uid);
        CREATE INDEX messages_to_mark ON messages (marked_on_server, state);

        CREATE TABLE registrations (
            id             INTEGER PRIMARY KEY,
            email          TEXT NOT NULL,
            name           TEXT,
            organisation   TEXT,
            status         TEXT NOT NULL CHECK (status IN ('confirmed', 'waitlisted', 'cancelled')),
            -- Queue order: server arrival, then the mail's UID, then the order listed in the mail.
            arrived_at     TEXT NOT NULL,
            arrival_uid    INTEGER NOT NULL,
            arrival_index  INTEGER NOT NULL,
            message_id     INTEGER REFERENCES messages (id),
            registered_by  TEXT,
            created_at     TEXT NOT NULL,
            updated_at     TEXT NOT NULL
        );
        -- One live registration per address; a cancelled person may sign up again.
        CREATE UNIQUE INDEX registrations_live_email ON registrations (email)
            WHERE status != 'cancelled';
        CREATE INDEX registrations_queue
            ON registrations (status, arrived_at, arrival_uid, arrival_index);

        CREATE TABLE outbox (
            id               INTEGER PRIMARY KEY,
            kind             TEXT NOT NULL,
            priority         INTEGER NOT NULL,      -- 0 replies, 1 reminders, 2 digest
            order_key        TEXT NOT NULL,         -- arrival of what it answers
            sender           TEXT NOT NULL,
            recipients       TEXT NOT NULL,         -- JSON list of envelope recipients
            message_id       TEXT NOT NULL UNIQUE,  -- fixed before the first attempt
            raw              BLOB NOT NULL,
            registration_id  INTEGER REFERENCES registrations (id),
            source_message   INTEGER REFERENCES messages (id),
            state            TEXT NOT NULL DEFAULT 'pending'
                             CHECK (state IN ('pending', 'sent', 'failed')),
            attempts         INTEGER NOT NULL DEFAULT 0,
            next_attempt_at  TEXT NOT NULL,
            last_error       TEXT,
            created_at       TEXT NOT NULL,
            sent_at          TEXT
        );
        CREATE INDEX outbox_due ON outbox (state, priority, order_key, id);

        -- What was decided and why; rows are only ever added.
        CREATE TABLE events (
            id               INTEGER PRIMARY KEY,
            at               TEXT NOT NULL,
            actor            TEXT NOT NULL,
            action           TEXT NOT NULL,
            email            TEXT,
            registration_id  INTEGER,
            message          INTEGER,
            reason           TEXT NOT NULL
        );
        CREATE INDEX events_by_email ON events (email, id);
        CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
        CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
        """,
    ),
    (
        2,
        "waiting list lifecycle: charter, organisation key, substitutes, forgetting",
        """
        ALTER TABLE registrations ADD COLUMN org_key TEXT;
        ALTER TABLE registrations ADD COLUMN name_key TEXT;
        CREATE INDEX registrations_by_name ON registrations (name_key, status);
        ALTER TABLE registrations ADD COLUMN charter INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE registrations ADD COLUMN source TEXT NOT NULL DEFAULT 'mail';
        ALTER TABLE registrations ADD COLUMN wait_reason TEXT;
        ALTER TABLE registrations ADD COLUMN substitute_for INTEGER REFERENCES registrations (id);
        ALTER TABLE registrations ADD COLUMN forgotten INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX registrations_by_org ON registrations (status, org_key);
        CREATE INDEX registrations_by_sender ON registrations (registered_by, status);
        ALTER TABLE events ADD COLUMN forgotten INTEGER NOT NULL DEFAULT 0;
        -- The log stays append-only, except that a person's data may be blanked on request.
        DROP TRIGGER events_append_only_update;
        CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
            WHEN NOT (NEW.forgotten = 1 AND NEW.id = OLD.id AND NEW.at = OLD.at
                      AND NEW.actor = OLD.actor AND NEW.action = OLD.action)
            BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
        """,
    ),
    (
        6,
        "automatic replies per recipient, for the daily cap",
        """
        -- One row per recipient of every automatic mail queued, so a cap per address and day
        -- can be checked with one indexed count (no loops with robots, no flooding a person).
        CREATE TABLE reply_log (
            address  TEXT NOT NULL,
            at       TEXT NOT NULL,
            outbox   INTEGER REFERENCES outbox (id)
        );
        CREATE INDEX reply_log_by_address ON reply_log (address, at);
        -- Mails over the size limit are kept as headers only, for a person to look at.
        ALTER TABLE messages ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        3,
        "reminders sent and sessions announced",
        """
        -- One row per reminder owed to a participant: the UNIQUE key is the exactly-once
        -- guarantee, written in the same transaction as the outbox row (outbox_id). A reminder
        -- made needless by an update mail about its session is recorded with no outbox row.
        -- sequence is the session's announced version: a moved session gets its reminders anew.
        CREATE TABLE reminders_sent (
            id               INTEGER PRIMARY KEY,
            registration_id  INTEGER NOT NULL REFERENCES registrations (id),
            session_number   INTEGER NOT NULL,
            lead_days        INTEGER NOT NULL,
            sequence         INTEGER NOT NULL DEFAULT 0,
            due_at           TEXT NOT NULL,
            outbox_id        INTEGER REFERENCES outbox (id),
            covered_by       TEXT NOT NULL CHECK (covered_by IN ('reminder', 'update')),
            created_at       TEXT NOT NULL,
            UNIQUE (registration_id, session_number, lead_days, sequence)
        );
        CREATE INDEX reminders_sent_by_session ON reminders_sent (session_number);

        -- What participants were last told about each session (date, hours, place, cancelled),
        -- so that a change in the config is noticed once and announced with SEQUENCE raised.
        CREATE TABLE session_announcements (
            session_number   INTEGER PRIMARY KEY,
            fingerprint      TEXT NOT NULL,
            sequence         INTEGER NOT NULL,
            cancelled        INTEGER NOT NULL DEFAULT 0,
            announced_at     TEXT NOT NULL
        );
        """,
    ),
    (
        4,
        "the organisers' daily digest",
        """
        -- One row per local day (UNIQUE: the exactly-once gate), written in the same transaction
        -- as the digest's outbox row. last_event_id is where the next digest starts reading the
        -- event log, so "since the last digest" survives a day the worker was down. A quiet day
        -- skipped by config has no outbox row and keeps the previous last_event_id.
        CREATE TABLE digests (
            id               INTEGER PRIMARY KEY,
            day              TEXT NOT NULL UNIQUE,  -- local date in the event's timezone
            last_event_id    INTEGER NOT NULL,
            last_outbox_id   INTEGER NOT NULL,
            outbox_id        INTEGER REFERENCES outbox (id),
            created_at       TEXT NOT NULL
        );
        """,
    ),
)


# Issue 8: the hot path reads only what is new. Each index below replaced a scan that grew with
# the whole history (checked with EXPLAIN QUERY PLAN in tests/test_query_plans.py).
MIGRATIONS += (
    (
        5,
        "indexes for a backlog: unmarked mail, events per registration",
        """
        -- Marking on the server looked at every mail of the folder ever fetched, each poll.
        CREATE INDEX messages_unmarked ON messages (folder, uidvalidity, uid)
            WHERE marked_on_server = 0;
        -- Reminders and history look up a registration's events; without it, a scan per person.
        CREATE INDEX events_by_registration ON events (registration_id, action);
        """,
    ),
)

# Issue 9: `leernetwerk health` reads when the worker last reached the mailbox and the relay.
MIGRATIONS += (
    (
        7,
        "worker health: the last poll and send, for monitoring",
        """
        -- One row per job ('poll': mailbox fetch and apply; 'send': the relay), overwritten each
        -- cycle: monitoring asks how long ago the last success was, not for a history.
        CREATE TABLE worker_health (
            job              TEXT PRIMARY KEY,
            last_attempt_at  TEXT NOT NULL,
            last_success_at  TEXT,
            last_error       TEXT,
            failures         INTEGER NOT NULL DEFAULT 0   -- in a row, since the last success
        );
        """,
    ),
)

# Issue 8: telling a new person their place must not count the whole waiting list. SQLite has no
# O(1) COUNT, so triggers keep the list's length; a newcomer's place is that length minus the few
# who arrived after them (none, for mail handled in arrival order). Never INSERT OR REPLACE into
# registrations: the row REPLACE removes fires no DELETE trigger, and the length would drift.
MIGRATIONS += (
    (
        9,
        "the waiting list's length, kept by triggers",
        """
        CREATE TABLE waitlist_size (
            one      INTEGER PRIMARY KEY CHECK (one = 1),
            waiting  INTEGER NOT NULL
        );
        INSERT INTO waitlist_size (one, waiting)
            VALUES (1, (SELECT COUNT(*) FROM registrations WHERE status = 'waitlisted'));
        CREATE TRIGGER waitlist_size_insert AFTER INSERT ON registrations
            WHEN new.status = 'waitlisted'
        BEGIN
            UPDATE waitlist_size SET waiting = waiting + 1;
        END;
        CREATE TRIGGER waitlist_size_delete AFTER DELETE ON registrations
            WHEN old.status = 'waitlisted'
        BEGIN
            UPDATE waitlist_size SET waiting = waiting - 1;
        END;
        CREATE TRIGGER waitlist_size_update AFTER UPDATE OF status ON registrations
            WHEN (old.status = 'waitlisted') != (new.status = 'waitlisted')
        BEGIN
            UPDATE waitlist_size
                SET waiting = waiting + (new.status = 'waitlisted') - (old.status = 'waitlisted');
        END;
        """,
    ),
)

# Issue 16, finding 4: two different mails with one Message-ID were one row, and the second
# moved the first's UID. A mail's identity is now its Message-ID and the hash of its bytes
# (store.values.identity); existing rows get theirs computed here (sha256_hex is registered on
# the connection by db.migrate). A mail erased under the old identity keeps a recognisable
# mark under "forgotten:mid:", so that fetching it again does not bring it back.
MIGRATIONS += (
    (
        10,
        "mail identity: Message-ID and the hash of the bytes",
        """
        UPDATE messages SET identity = 'forgotten:mid:' || substr(identity, 11)
            WHERE identity LIKE 'forgotten:%' AND identity NOT LIKE 'forgotten:mid:%';
        UPDATE messages SET identity = message_id || ' sha256:' || sha256_hex(raw)
            WHERE identity NOT LIKE 'forgotten:%' AND identity NOT LIKE 'sha256:%'
              AND message_id IS NOT NULL;
        """,
    ),
)

# Issue 18: the relay's pace is counted from the database, so a restart (or an organiser's
# command that sends) does not forget what went out in the last minute.
MIGRATIONS += (
    (
        12,
        "when the relay accepted each mail, for pacing across restarts",
        """
        -- Seconds since the epoch (the pacer's clock) of the relay's 250, for every mail this
        -- version sends. sent_at is the program's clock (--now) and the flush's start, so it
        -- cannot tell how many went out in the last sixty seconds.
        ALTER TABLE outbox ADD COLUMN relayed_at REAL;
        CREATE INDEX outbox_relayed ON outbox (relayed_at) WHERE relayed_at IS NOT NULL;
        """,
    ),
)

# Issue 18: the arrival time may be refined by the receiving server's own Received time; the
# mailbox's INTERNALDATE is kept beside it, so the order can always be explained.
MIGRATIONS += (
    (
        13,
        "INTERNALDATE kept beside the arrival time",
        """
        -- NULL for mails stored before this version: their arrived_at is INTERNALDATE.
        ALTER TABLE messages ADD COLUMN internal_date TEXT;
        """,
    ),
)

# Issue 19 and issue 16 (authority): decisions by mail. A token is good for one decision: its
# MAC is recorded in the same transaction as the decision it authorised.
MIGRATIONS += (
    (
        14,
        "used decision tokens: each mailto: link applies once",
        """
        CREATE TABLE used_tokens (
            mac        TEXT PRIMARY KEY,       -- the token's HMAC, unique per action+item+expiry
            action     TEXT NOT NULL,
            item       TEXT NOT NULL,
            used_at    TEXT NOT NULL,
            used_by    TEXT NOT NULL,          -- the address the decision came from
            message    INTEGER REFERENCES messages (id),
            outcome    TEXT NOT NULL           -- what it did, for "already settled by …"
        );
        """,
    ),
    (
        15,
        "requests waiting for a confirmation by mail",
        """
        -- A hand-written command waits for the organiser's confirmation; a cancellation or a
        -- substitution without a trusted sender verdict waits for the participant's (or an
        -- organiser's). The confirmation mail carries a token for 'c<id>'.
        CREATE TABLE requests (
            id               INTEGER PRIMARY KEY,
            kind             TEXT NOT NULL CHECK (kind IN ('command', 'cancel', 'substitute')),
            email            TEXT NOT NULL,          -- the one address whose mail confirms it
            message          INTEGER REFERENCES messages (id),  -- the mail that asked
            registration_id  INTEGER REFERENCES registrations (id),
            payload          TEXT NOT NULL,          -- JSON: the command, the substitute
            summary          TEXT NOT NULL,          -- what it would do, in Dutch
            created_at       TEXT NOT NULL,
            expires_at       TEXT NOT NULL,
            settled_at       TEXT,
            settled_by       TEXT,
            outcome          TEXT                    -- confirmed | settled otherwise
        );
        CREATE INDEX requests_by_message ON requests (message) WHERE settled_at IS NULL;
        CREATE INDEX requests_by_registration ON requests (registration_id, kind)
            WHERE settled_at IS NULL;
        """,
    ),
    (
        16,
        "events by mail: who settled a mail, and how",
        """
        CREATE INDEX events_by_message ON events (message, id);
        """,
    ),
)
