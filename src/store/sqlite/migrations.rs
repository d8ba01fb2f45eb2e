//! Versioned schema migrations. `PRAGMA user_version` holds how many have been applied.
//!
//! Architecture invariant: migrations are append-only. A released migration is never edited.

/// Each entry moves the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: runs, their dependencies and attempts.
    r#"
    CREATE TABLE runs (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        job              TEXT    NOT NULL,
        state            TEXT    NOT NULL,
        priority         INTEGER NOT NULL,
        trigger          TEXT    NOT NULL,
        key              TEXT,
        attempt          INTEGER NOT NULL DEFAULT 0,
        max_attempts     INTEGER NOT NULL,
        created_at       INTEGER NOT NULL,
        due_at           INTEGER NOT NULL,
        started_at       INTEGER,
        finished_at      INTEGER,
        exit_code        INTEGER,
        signal           INTEGER,
        error            TEXT,
        env              TEXT,
        schedule         TEXT,
        scheduled_at     INTEGER,
        owner            TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        retried_by       INTEGER,
        retry_of         INTEGER
    );
    CREATE UNIQUE INDEX runs_job_key ON runs(job, key) WHERE key IS NOT NULL;
    CREATE INDEX runs_ready ON runs(priority DESC, due_at, id) WHERE state = 'queued';
    CREATE INDEX runs_due ON runs(due_at) WHERE state IN ('delayed', 'retrying');
    CREATE INDEX runs_active ON runs(job, state) WHERE state IN ('delayed', 'waiting', 'queued', 'running', 'retrying');
    CREATE INDEX runs_running ON runs(owner) WHERE state = 'running';
    CREATE INDEX runs_finished ON runs(finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX runs_dead ON runs(finished_at) WHERE state = 'dead' AND retried_by IS NULL;
    CREATE INDEX runs_job_finished ON runs(job, finished_at) WHERE finished_at IS NOT NULL;

    CREATE TABLE run_deps (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        dep_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        PRIMARY KEY (run_id, dep_id)
    ) WITHOUT ROWID;
    CREATE INDEX run_deps_dep ON run_deps(dep_id);

    CREATE TABLE attempts (
        run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq          INTEGER NOT NULL,
        number       INTEGER NOT NULL,
        started_at   INTEGER NOT NULL,
        finished_at  INTEGER,
        exit_code    INTEGER,
        signal       INTEGER,
        outcome      TEXT,
        error        TEXT,
        output_bytes INTEGER,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    "#,
    // 2: schedules — a cursor per schedule and every fire instant, enqueued or missed.
    r#"
    CREATE TABLE schedule_cursors (
        name    TEXT PRIMARY KEY,
        cursor  INTEGER NOT NULL,
        enabled INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE fires (
        schedule    TEXT    NOT NULL,
        fire_at     INTEGER NOT NULL,
        job         TEXT    NOT NULL,
        outcome     TEXT    NOT NULL,
        reason      TEXT,
        run_id      INTEGER,
        count       INTEGER NOT NULL DEFAULT 1,
        recorded_at INTEGER NOT NULL,
        PRIMARY KEY (schedule, fire_at)
    ) WITHOUT ROWID;
    CREATE INDEX fires_recorded ON fires(recorded_at);
    CREATE INDEX runs_schedule ON runs(schedule, scheduled_at) WHERE schedule IS NOT NULL;
    "#,
    // 3: alerts — the outbox, throttle windows, and the deadline of each fire (`late`).
    r#"
    CREATE TABLE alerts (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        rule            TEXT    NOT NULL,
        channel         TEXT    NOT NULL,
        job             TEXT,
        event           TEXT    NOT NULL,
        run_id          INTEGER,
        status          TEXT    NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        error           TEXT,
        payload         TEXT    NOT NULL,
        created_at      INTEGER NOT NULL,
        finished_at     INTEGER,
        lease           TEXT,
        lease_until     INTEGER
    );
    CREATE INDEX alerts_pending ON alerts(next_attempt_at) WHERE status = 'pending';
    CREATE INDEX alerts_created ON alerts(created_at);

    CREATE TABLE throttles (
        rule       TEXT    NOT NULL,
        job        TEXT    NOT NULL,
        window_end INTEGER NOT NULL,
        suppressed INTEGER NOT NULL DEFAULT 0,
        kinds      TEXT    NOT NULL DEFAULT '{}',
        PRIMARY KEY (rule, job)
    ) WITHOUT ROWID;

    ALTER TABLE fires ADD COLUMN deadline_at INTEGER;
    CREATE INDEX fires_deadline ON fires(deadline_at) WHERE deadline_at IS NOT NULL;
    "#,
    // 4: small facts about the data directory (the daemon's heartbeat).
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 5: one index for unfinished runs, keyed by state first: it serves "the running runs" as
    // well as "the unfinished runs of job X", so a run's start and end touch one index less.
    r#"
    DROP INDEX runs_running;
    DROP INDEX runs_active;
    CREATE INDEX runs_active ON runs(state, job) WHERE state IN ('delayed', 'waiting', 'queued', 'running', 'retrying');
    "#,
    // 6: workflows — each run's pinned steps (stored once per distinct definition) and input,
    // each step's checkpoint, signals; a suspended run is unfinished (it joins the active
    // states) and due when a step wakes.
    r#"
    CREATE TABLE definitions (
        id     INTEGER PRIMARY KEY,
        digest TEXT    NOT NULL UNIQUE,
        text   TEXT    NOT NULL
    );
    ALTER TABLE runs ADD COLUMN definition INTEGER REFERENCES definitions(id);
    CREATE INDEX runs_definition ON runs(definition) WHERE definition IS NOT NULL;
    ALTER TABLE runs ADD COLUMN input TEXT;
    ALTER TABLE runs ADD COLUMN origin INTEGER;
    ALTER TABLE runs ADD COLUMN resume INTEGER NOT NULL DEFAULT 0;

    DROP INDEX runs_active;
    CREATE INDEX runs_active ON runs(state, job) WHERE state IN ('delayed', 'waiting', 'queued', 'running', 'retrying', 'suspended');
    DROP INDEX runs_due;
    CREATE INDEX runs_due ON runs(due_at) WHERE state IN ('delayed', 'retrying', 'suspended');

    CREATE TABLE steps (
        run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name        TEXT    NOT NULL,
        idx         INTEGER NOT NULL,
        kind        TEXT    NOT NULL,
        state       TEXT    NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        tries       INTEGER NOT NULL DEFAULT 0,
        started_at  INTEGER,
        finished_at INTEGER,
        wake_at     INTEGER,
        waiting_for TEXT,
        exit_code   INTEGER,
        signal      INTEGER,
        error       TEXT,
        outputs     TEXT,
        reused_from INTEGER,
        PRIMARY KEY (run_id, name)
    ) WITHOUT ROWID;

    CREATE TABLE signals (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name        TEXT    NOT NULL,
        data        TEXT,
        fail        TEXT,
        created_at  INTEGER NOT NULL,
        consumed_by TEXT,
        consumed_at INTEGER
    );
    CREATE INDEX signals_pending ON signals(run_id, name) WHERE consumed_at IS NULL;

    ALTER TABLE alerts ADD COLUMN dedupe TEXT;
    CREATE UNIQUE INDEX alerts_dedupe ON alerts(dedupe) WHERE dedupe IS NOT NULL;
    "#,
    // 7: schedules paused by a person (`worker schedules:pause`, the API): kept across restarts
    // and reloads, unlike a schedule's `enabled`, which belongs to the configuration.
    r#"
    CREATE TABLE schedule_pauses (
        name      TEXT    PRIMARY KEY,
        paused_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 8: queued runs ordered per job: a claim reads the best few runs of each job that has room,
    // instead of walking the one global order past every run of a job at its limit.
    r#"
    DROP INDEX runs_ready;
    CREATE INDEX runs_job_ready ON runs(job, priority DESC, due_at, id) WHERE state = 'queued';
    "#,
    // 9: a log of state changes (one row per run created or changed state, one per step that
    // changed state, with the state it changed to), written by triggers so that no path can
    // forget it: the HTTP API's event stream replays it from a client's last event id.
    // Also: runs of a job, newest first (`GET /runs`).
    r#"
    CREATE TABLE changes (
        seq    INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL,
        step   TEXT,
        state  TEXT NOT NULL
    );
    CREATE TRIGGER runs_created AFTER INSERT ON runs
        BEGIN INSERT INTO changes (run_id, state) VALUES (NEW.id, NEW.state); END;
    CREATE TRIGGER runs_changed AFTER UPDATE OF state ON runs WHEN OLD.state IS NOT NEW.state
        BEGIN INSERT INTO changes (run_id, state) VALUES (NEW.id, NEW.state); END;
    CREATE TRIGGER steps_changed AFTER UPDATE OF state ON steps WHEN OLD.state IS NOT NEW.state
        BEGIN INSERT INTO changes (run_id, step, state) VALUES (NEW.run_id, NEW.name, NEW.state); END;
    CREATE INDEX runs_job_id ON runs(job, id);
    "#,
    // 10: what deleted rows (pruned history, `queue:purge`) contributed to the metrics, kept so
    // that the counters and histograms of `/metrics`, computed from the store, never go down.
    // `metric` names the series; `a`, `b`, `c` its labels (for histograms `b` is the bucket's
    // index, see `metrics::*_BUCKETS`). Written by triggers: no deleting path can forget it.
    r#"
    CREATE TABLE metric_totals (
        metric TEXT    NOT NULL,
        a      TEXT    NOT NULL,
        b      TEXT    NOT NULL DEFAULT '',
        c      TEXT    NOT NULL DEFAULT '',
        n      INTEGER NOT NULL,
        sum    REAL    NOT NULL DEFAULT 0,
        PRIMARY KEY (metric, a, b, c)
    ) WITHOUT ROWID;
    CREATE TRIGGER runs_counted BEFORE DELETE ON runs
        WHEN OLD.state IN ('succeeded', 'dead', 'cancelled')
    BEGIN
        INSERT INTO metric_totals (metric, a, b, n) VALUES ('runs', OLD.job, OLD.state, 1)
            ON CONFLICT (metric, a, b, c) DO UPDATE SET n = n + 1;
        INSERT INTO metric_totals (metric, a, b, n, sum)
            SELECT 'run_duration', OLD.job, CASE WHEN d <= 0.1 THEN 0 WHEN d <= 0.5 THEN 1 WHEN d <= 1.0 THEN 2 WHEN d <= 5.0 THEN 3 WHEN d <= 10.0 THEN 4 WHEN d <= 30.0 THEN 5 WHEN d <= 60.0 THEN 6 WHEN d <= 300.0 THEN 7 WHEN d <= 900.0 THEN 8 WHEN d <= 1800.0 THEN 9 WHEN d <= 3600.0 THEN 10 WHEN d <= 7200.0 THEN 11 ELSE 12 END, 1, d
            FROM (SELECT (OLD.finished_at - OLD.started_at) / 1000.0 AS d) WHERE d IS NOT NULL
            ON CONFLICT (metric, a, b, c) DO UPDATE SET n = n + 1, sum = sum + excluded.sum;
        INSERT INTO metric_totals (metric, a, b, n, sum)
            SELECT 'queue_wait', OLD.job, CASE WHEN d <= 0.005 THEN 0 WHEN d <= 0.01 THEN 1 WHEN d <= 0.05 THEN 2 WHEN d <= 0.1 THEN 3 WHEN d <= 0.5 THEN 4 WHEN d <= 1.0 THEN 5 WHEN d <= 5.0 THEN 6 WHEN d <= 10.0 THEN 7 WHEN d <= 60.0 THEN 8 WHEN d <= 300.0 THEN 9 WHEN d <= 3600.0 THEN 10 ELSE 11 END, 1, d
            FROM (SELECT max(0, (SELECT max(started_at) FROM attempts WHERE run_id = OLD.id) - OLD.due_at) / 1000.0 AS d) WHERE d IS NOT NULL
            ON CONFLICT (metric, a, b, c) DO UPDATE SET n = n + 1, sum = sum + excluded.sum;
    END;
    CREATE TRIGGER runs_children_counted BEFORE DELETE ON runs
    BEGIN
        INSERT INTO metric_totals (metric, a, b, n)
            SELECT 'attempts', OLD.job, outcome, count(*) FROM attempts
            WHERE run_id = OLD.id AND outcome IS NOT NULL GROUP BY outcome
            ON CONFLICT (metric, a, b, c) DO UPDATE SET n = n + excluded.n;
        INSERT INTO metric_totals (metric, a, b, c, n)
            SELECT 'steps', OLD.job, name, state, count(*) FROM steps
            WHERE run_id = OLD.id AND reused_from IS NULL
                AND state IN ('succeeded', 'failed', 'skipped', 'cancelled')
            GROUP BY name, state
            ON CONFLICT (metric, a, b, c) DO UPDATE SET n = n + excluded.n;
    END;
    CREATE TRIGGER fires_counted BEFORE DELETE ON fires
    BEGIN
        INSERT INTO metric_totals (metric, a, b, n) VALUES ('fires', OLD.schedule, OLD.outcome, OLD.count)
            ON CONFLICT (metric, a, b, c) DO UPDATE SET n = n + excluded.n;
        INSERT INTO metric_totals (metric, a, b, n, sum)
            SELECT 'fire_lag', '', CASE WHEN d <= 0.01 THEN 0 WHEN d <= 0.05 THEN 1 WHEN d <= 0.1 THEN 2 WHEN d <= 0.5 THEN 3 WHEN d <= 1.0 THEN 4 WHEN d <= 5.0 THEN 5 WHEN d <= 30.0 THEN 6 WHEN d <= 60.0 THEN 7 WHEN d <= 300.0 THEN 8 WHEN d <= 3600.0 THEN 9 ELSE 10 END, 1, d
            FROM (SELECT max(0, OLD.recorded_at - OLD.fire_at) / 1000.0 AS d) WHERE OLD.outcome = 'enqueued'
            ON CONFLICT (metric, a, b, c) DO UPDATE SET n = n + 1, sum = sum + excluded.sum;
    END;
    CREATE TRIGGER alerts_counted BEFORE DELETE ON alerts WHEN OLD.status != 'pending'
    BEGIN
        INSERT INTO metric_totals (metric, a, b, n) VALUES ('alerts', OLD.channel, OLD.status, 1)
            ON CONFLICT (metric, a, b, c) DO UPDATE SET n = n + 1;
    END;
    "#,
    // 11: the daemons that used this store (one at a time on SQLite), for `worker nodes`;
    // instants in milliseconds by SQLite's clock.
    r#"
    CREATE TABLE nodes (
        name         TEXT    PRIMARY KEY,
        host         TEXT    NOT NULL,
        pid          INTEGER NOT NULL,
        version      TEXT    NOT NULL,
        started_at   INTEGER NOT NULL,
        heartbeat_at INTEGER NOT NULL,
        state        TEXT    NOT NULL,
        epoch        INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 12: an attempt's captured output kept in the store (written on a shared store only; on
    // SQLite the output files are on this host).
    r#"
    ALTER TABLE attempts ADD COLUMN output BLOB;
    "#,
];
