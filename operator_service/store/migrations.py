"""The schema, as numbered migrations applied in one committed transaction.

Migration 1 is the original operator-service schema that Ocean's
operator-engine, pod-configuration and pod-publishing read and write; it uses
IF NOT EXISTS throughout so that it also adopts a database initialised by the original
service. Later migrations only add. `schema_migrations` records what has been applied,
so `upgrade()` is idempotent and brings any older database up to date.

A migration is SQL, or a function of the migration's cursor for what SQL alone cannot
say; such a function returns what it found for `upgrade()` to report. A migration is
never edited once released, except where it failed on real data: the unique index on
running agreementIds, first created by migration 4, failed on databases the original
service filled with duplicates, so it moved to migration 7, which copes with them.
Databases that applied migration 4 as it was already have the index; migration 7 then
finds it and no duplicates, and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from operator_service.store.pool import Cursor, Database, only_row

log = logging.getLogger(__name__)

# Long enough to build an index on a large jobs table; only once there is work to do.
MIGRATION_SECONDS = 600.0

ORIGINAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    agreementId varchar(255) NOT NULL,
    workflowId varchar(255) NOT NULL,
    owner varchar(255),
    status int,
    statusText varchar(255),
    laststatusupdate timestamp without time zone DEFAULT NOW(),
    dateCreated timestamp without time zone DEFAULT NOW(),
    dateFinished timestamp without time zone DEFAULT NULL,
    configlogURL text,
    publishlogURL text,
    algologURL text,
    outputsURL text,
    ddo text,
    namespace varchar(255),
    stopreq smallint DEFAULT 0,
    removed smallint DEFAULT 0,
    workflow text,
    provider varchar(255)
);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS workflow text;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS provider varchar(255);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS did varchar(255);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS chainid varchar(255);
CREATE UNIQUE INDEX IF NOT EXISTS uniq_agreementId_workflowId ON jobs (agreementId, workflowId);
CREATE INDEX IF NOT EXISTS indx_owner_jobs ON jobs (owner);

CREATE TABLE IF NOT EXISTS envs (
    namespace varchar(255) NOT NULL,
    status text,
    lastping timestamp without time zone DEFAULT NOW()
);
CREATE UNIQUE INDEX IF NOT EXISTS unique_namespace ON envs (namespace);

CREATE TABLE IF NOT EXISTS nonces (
    provider varchar(255) NOT NULL,
    nonce varchar(255)
);

CREATE OR REPLACE FUNCTION announce(environment varchar(255), fullstatus text, lmt int)
RETURNS TABLE (workflow varchar(255)) LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO envs (namespace, status, lastping) VALUES (environment, fullstatus, NOW())
    ON CONFLICT (namespace) DO UPDATE SET status = EXCLUDED.status, lastping = EXCLUDED.lastping;
    RETURN QUERY SELECT jobs.workflowId FROM jobs
        WHERE jobs.namespace = environment AND jobs.status = 1 LIMIT lmt;
END;
$$;
"""

# Timestamps are UTC: `timestamp without time zone` columns are filled by NOW() in the
# writer's session time zone, and Ocean's engine writes dateFinished = NOW() from its
# own sessions. Setting the database default makes every new session UTC; the DO block
# tolerates a role that does not own the database (our own sessions set UTC anyway).
UTC_TIMESTAMPS = """
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET timezone TO %L', current_database(), 'UTC');
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot set the database time zone; sessions of operator-service use UTC';
END;
$$;
ALTER TABLE jobs ALTER COLUMN dateCreated SET DEFAULT timezone('UTC', now());
ALTER TABLE jobs ALTER COLUMN laststatusupdate SET DEFAULT timezone('UTC', now());
ALTER TABLE envs ALTER COLUMN lastping SET DEFAULT timezone('UTC', now());
"""

# Nonces: each nonce once per provider, compared as a number of
# seconds; the unique index makes "record if unseen" atomic and serves the max() lookup.
NONCE_KEYS = """
ALTER TABLE nonces ADD COLUMN IF NOT EXISTS seconds numeric;
DELETE FROM nonces WHERE seconds IS NULL;
ALTER TABLE nonces ALTER COLUMN seconds SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS uniq_nonces_provider_seconds ON nonces (provider, seconds);
"""

# Every lookup the routes and the engines make is indexed. (The unique index on running
# agreementIds that this migration first created is made by migration 7.)
JOB_INDEXES = """
CREATE INDEX IF NOT EXISTS indx_jobs_workflowid ON jobs (workflowId);
CREATE INDEX IF NOT EXISTS indx_jobs_running ON jobs (dateCreated) WHERE dateFinished IS NULL;
CREATE INDEX IF NOT EXISTS indx_jobs_queued ON jobs (namespace) WHERE status = 1;
CREATE INDEX IF NOT EXISTS indx_jobs_registering ON jobs (dateCreated) WHERE status = 0;
"""

# The replay guard as one server-side function: plpgsql keeps the
# plans of its statements, so a request pays for executing them, not for planning them
# (the same logic as one statement with CTEs cost twice the server time). The check and
# the record stay atomic: the unique index on (provider, seconds) lets exactly one of two
# concurrent equal nonces in. Rows below the window can never be accepted again, so they
# are pruned, once per window-long period of each provider's nonces (pruning on every
# call cost as much as the rest of the function).
NONCE_FUNCTION = """
CREATE OR REPLACE FUNCTION operator_record_nonce(
    p_provider varchar, p_nonce varchar, p_seconds numeric, p_window numeric
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    newest numeric;
BEGIN
    SELECT max(seconds) INTO newest FROM nonces WHERE provider = p_provider;
    IF newest IS NOT NULL AND p_seconds < newest - p_window THEN
        RETURN false;
    END IF;
    INSERT INTO nonces (provider, nonce, seconds) VALUES (p_provider, p_nonce, p_seconds)
    ON CONFLICT (provider, seconds) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF newest IS NULL OR floor(p_seconds / p_window) > floor(newest / p_window) THEN
        DELETE FROM nonces WHERE provider = p_provider AND seconds < p_seconds - p_window;
    END IF;
    RETURN true;
END;
$$;
"""

# algoDID and inputDID of every status object, stored when the job is inserted instead of
# parsed out of the workflow document on every read. Rows written before stay NULL and
# are read the old way (jobs.DID_COLUMNS).
DID_COLUMNS = """
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS algoDID text;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS inputDIDs text[];
"""

SharedAgreements = dict[str, list[str]]

# New jobs are refused by the trigger below when a job kept from before the upgrade still
# runs with their agreementId (those jobs are left out of the unique index).
REFUSE_KEPT_AGREEMENTS = """
CREATE OR REPLACE FUNCTION operator_refuse_running_agreement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM jobs WHERE agreementId = NEW.agreementId AND dateFinished IS NULL) THEN
        RAISE EXCEPTION 'agreementId %% already has a running job', NEW.agreementId
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END;
$$;
DROP TRIGGER IF EXISTS operator_kept_agreements ON jobs;
CREATE TRIGGER operator_kept_agreements BEFORE INSERT ON jobs FOR EACH ROW
    WHEN (NEW.agreementId = ANY (%(agreements)s::varchar[]))
    EXECUTE PROCEDURE operator_refuse_running_agreement();
"""


def unique_running_agreements(cur: Cursor) -> SharedAgreements:
    """A running agreementId is unique in the database itself, so concurrent POSTs cannot
    both create a job; return the running jobs found sharing an agreementId.

    The original service checked in Python, so under concurrent POSTs two running jobs
    could share one; a unique index over them cannot be built, and deleting either would
    lose a job someone paid for. They are kept as they are and left out of the index,
    and a trigger, fired only for their agreementIds, refuses any new job while one of
    them still runs. Every job created from now on is in the index.
    """
    cur.execute(
        "SELECT agreementId, array_agg(workflowId::text ORDER BY dateCreated, workflowId) FROM jobs"
        " WHERE dateFinished IS NULL GROUP BY agreementId HAVING count(*) > 1 ORDER BY agreementId"
    )
    shared: SharedAgreements = {agreement: list(job_ids) for agreement, job_ids in cur.fetchall()}
    kept = sorted(job_id for job_ids in shared.values() for job_id in job_ids)
    predicate = "dateFinished IS NULL"
    if kept:
        predicate += cur.mogrify(" AND NOT (workflowId = ANY (%s::varchar[]))", (kept,)).decode()
    cur.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS uniq_running_agreementid ON jobs (agreementId) WHERE {predicate}")
    if shared:
        cur.execute(REFUSE_KEPT_AGREEMENTS, {"agreements": sorted(shared)})
    return shared


# PUT /compute annotates the WorkFlows of the jobs it stops. The flag is set with stopreq,
# in the same statement, and cleared once the annotation landed; the reconciler retries
# whatever stays flagged (registration.deliver_stop_annotations).
STOP_ANNOTATIONS = """
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS stopAnnotationPending boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS indx_jobs_stop_annotation ON jobs (dateCreated) WHERE stopAnnotationPending;
"""

# What the history records of each change, as of migration 9 (12 adds dateResultsExpired).
HISTORY_COLUMNS_9 = (
    "status",
    "statusText",
    "stopreq",
    "removed",
    "dateFinished",
    "endReason",
    "endReasonText",
    "exitCode",
)


def job_change_triggers(columns: Sequence[str]) -> str:
    """The trigger function and triggers that copy `columns` of a job into job_history on its
    creation and on every change of one of them (registrations under way, status 0, left out)."""
    listed = ", ".join(columns)
    values = ", ".join(f"NEW.{column}" for column in columns)
    changed = " OR ".join(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in columns)
    return f"""
CREATE OR REPLACE FUNCTION operator_record_job_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_history (workflowId, changedBy, {listed})
    VALUES (NEW.workflowId, NULLIF(current_setting('application_name', true), ''), {values});
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS operator_job_created ON jobs;
CREATE TRIGGER operator_job_created AFTER INSERT ON jobs FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM 0)
    EXECUTE PROCEDURE operator_record_job_change();
DROP TRIGGER IF EXISTS operator_job_changed ON jobs;
CREATE TRIGGER operator_job_changed AFTER UPDATE OF {listed} ON jobs
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM 0 AND ({changed}))
    EXECUTE PROCEDURE operator_record_job_change();
"""


# Every change of a job's status, stop request, removal or ending, by whoever makes it: the
# service, our engine or Ocean's, which all write `jobs` with their own statements, so the
# record is kept by the database itself. A registration under way (status 0) is not
# recorded: it is never shown. changedBy is the writing session's application_name
# (operator-service, operator-engine <namespace>; what another engine sets, or null).
# clock_timestamp(): two changes in one transaction keep their own times.
JOB_HISTORY = """
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS endReason varchar(64);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS endReasonText text;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS exitCode int;
CREATE TABLE IF NOT EXISTS job_history (
    id bigserial PRIMARY KEY,
    workflowId varchar(255) NOT NULL,
    changedAt timestamp without time zone NOT NULL DEFAULT timezone('UTC', clock_timestamp()),
    changedBy text,
    status int,
    statusText varchar(255),
    stopreq smallint,
    removed smallint,
    dateFinished timestamp without time zone,
    endReason varchar(64),
    endReasonText text,
    exitCode int
);
CREATE INDEX IF NOT EXISTS indx_job_history_job ON job_history (workflowId, id);
""" + job_change_triggers(HISTORY_COLUMNS_9)

# The id of the request that created a job (X-Request-Id, or the one the service made), so
# that the local engine's log lines for the job carry it too. Ocean's engine ignores it.
REQUEST_IDS = """
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS requestId varchar(128);
"""

# Results expire STORAGE_EXPIRY seconds after their job finished: the local engine deletes
# them and records when, so the status object and getResult can say so (the deletion is
# decided from this column, never from an engine's memory). The index serves the engine's
# sweep: the finished jobs of a namespace whose results are still kept, oldest first.
RESULTS_EXPIRY = """
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS dateResultsExpired timestamp without time zone DEFAULT NULL;
CREATE INDEX IF NOT EXISTS indx_jobs_results_kept ON jobs (namespace, dateFinished)
    WHERE dateFinished IS NOT NULL AND dateResultsExpired IS NULL;
"""

# Results deleted at their expiry are a change of the job too: the history records when.
RESULTS_EXPIRY_HISTORY = (
    "ALTER TABLE job_history ADD COLUMN IF NOT EXISTS dateResultsExpired timestamp without time zone;"
    + job_change_triggers((*HISTORY_COLUMNS_9, "dateResultsExpired"))
)

Step = str | Callable[[Cursor], SharedAgreements]

MIGRATIONS: Sequence[tuple[int, str, Step]] = (
    (1, "original operator-service schema", ORIGINAL_SCHEMA),
    (2, "UTC timestamps", UTC_TIMESTAMPS),
    (3, "nonce keys", NONCE_KEYS),
    (4, "job indexes", JOB_INDEXES),
    (5, "nonce function", NONCE_FUNCTION),
    (6, "stage DID columns", DID_COLUMNS),
    (7, "unique running agreementIds, duplicates kept", unique_running_agreements),
    (8, "pending stop annotations", STOP_ANNOTATIONS),
    (9, "job history and end reasons", JOB_HISTORY),
    (10, "request ids of jobs", REQUEST_IDS),
    (11, "results expiry", RESULTS_EXPIRY),
    (12, "results expiry in the history", RESULTS_EXPIRY_HISTORY),
)

LATEST_VERSION = MIGRATIONS[-1][0]


@dataclass(frozen=True)
class Upgrade:
    """What `upgrade()` did: the migrations applied, and the running jobs found sharing an
    agreementId (agreementId -> job ids, kept as they were)."""

    applied: list[int]
    shared_agreements: SharedAgreements = field(default_factory=dict)

    def report(self) -> str:
        """One line for the log and the console."""
        text = f"schema at version {LATEST_VERSION} (applied now: {self.applied or 'none'})"
        if self.shared_agreements:
            jobs = sum(len(job_ids) for job_ids in self.shared_agreements.values())
            listed = "; ".join(
                f"{agreement}: {', '.join(job_ids)}" for agreement, job_ids in self.shared_agreements.items()
            )
            text += (
                f"; found {jobs} running jobs sharing {len(self.shared_agreements)} agreementIds, kept as they"
                f" are (no new job may use these agreementIds while they run): {listed}"
            )
        return text


def upgrade(db: Database) -> Upgrade:
    """Apply every migration not yet applied, in one transaction; report what was done.

    A quick look first, within the pool's usual deadline (a database that does not answer
    costs a caller seconds, not minutes); the migrations then get MIGRATION_SECONDS. An
    advisory lock serialises concurrent callers (several workers, several replicas).
    """
    if _applied_versions(db) >= {version for version, _, _ in MIGRATIONS}:
        return Upgrade([])
    with db.transaction(MIGRATION_SECONDS) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('operator-service-schema'))")
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, description text NOT NULL,"
            " applied_at timestamp without time zone NOT NULL DEFAULT timezone('UTC', now()))"
        )
        cur.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in cur.fetchall()}
        applied: list[int] = []
        shared: SharedAgreements = {}
        for version, description, step in MIGRATIONS:
            if version in done:
                continue
            if isinstance(step, str):
                cur.execute(step)
            else:
                shared.update(step(cur))
            cur.execute(
                "INSERT INTO schema_migrations (version, description) VALUES (%s, %s)",
                (version, description),
            )
            applied.append(version)
    result = Upgrade(applied, shared)
    if applied:
        (log.warning if shared else log.info)("%s", result.report())
    return result


def _applied_versions(db: Database) -> set[int]:
    with db.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not only_row(cur)[0]:
            return set()
        cur.execute("SELECT version FROM schema_migrations")
        return {row[0] for row in cur.fetchall()}


def current_version(db: Database) -> int:
    """The newest applied migration, 0 for an empty database."""
    with db.transaction() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not only_row(cur)[0]:
            return 0
        cur.execute("SELECT COALESCE(max(version), 0) FROM schema_migrations")
        return int(only_row(cur)[0])
