"""`operator-service jobs`: the job table for the operator on the machine, from the database itself.

Without a job id it lists jobs, newest first, filtered by owner, status, environment and
creation time, one page at a time (--limit, --offset); with one, it shows that job's row and
its history. It reads the database the service uses (local_service.database: POSTGRES_*, or
the embedded one of `make run`), so it works whether or not the API runs, and shows what the
admin routes GET /jobs and GET /job answer (--json prints exactly that).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import psycopg2

from operator_service.command_line import ArgumentParser
from operator_service.domain import job_records
from operator_service.domain.errors import NotFound
from operator_service.model.times import parse_moment
from operator_service.store.jobs import MAX_LISTED, JobQuery
from operator_service.store.pool import Database, DatabaseUnavailable
from operator_service.tools import local_service
from operator_service.tools.launcher import StartupError

DEFAULT_LIMIT = 20


def add_parser(commands: Any) -> None:
    """The `jobs` subcommand, on the subparsers of `operator-service`."""
    jobs_parser: ArgumentParser = commands.add_parser(
        "jobs",
        help="list jobs from the database, or show one job and its history",
        description="List the jobs in the database the service uses (POSTGRES_*, or the embedded one of"
        " make run in OPERATOR_DATA_DIR), newest first, with why each ended; with JOB_ID, show that job's"
        " row and every recorded change of its status.",
    )
    jobs_parser.add_argument("job_id", nargs="?", metavar="JOB_ID", help="the job to show (default: list jobs)")
    jobs_parser.add_argument("--owner", help="only jobs of this consumer address, any letter case (default: any)")
    jobs_parser.add_argument("--status", type=int, help="only jobs at this status, e.g. 40 or 70 (default: any)")
    jobs_parser.add_argument("--environment", help="only jobs of this compute environment (default: any)")
    jobs_parser.add_argument(
        "--since",
        type=_moment,
        help="only jobs created at or after this time: epoch seconds or ISO 8601 such as 2026-12-01T10:00:00Z"
        " (UTC unless an offset is given; default: any time)",
    )
    jobs_parser.add_argument(
        "--limit",
        type=_bounded(1, MAX_LISTED),
        default=DEFAULT_LIMIT,
        help=f"jobs per page, at most {MAX_LISTED} (default: %(default)s)",
    )
    jobs_parser.add_argument(
        "--offset", type=_bounded(0, 10**9), default=0, help="jobs to skip, for the next pages (default: 0)"
    )
    jobs_parser.add_argument(
        "--json", action="store_true", help="print what the admin routes answer, as JSON (default: a table)"
    )


def jobs(args: argparse.Namespace) -> int:
    postgres, where = local_service.database()
    db = Database(postgres, max_connections=1)
    try:
        if args.job_id:
            record = job_records.inspect_job(db, args.job_id)
            print(json.dumps(record, indent=2) if args.json else _job_text(record))
            return 0
        query = JobQuery(args.owner, args.status, args.environment, args.since, args.limit, args.offset)
        listed = job_records.list_jobs(db, query)
        print(json.dumps(listed, indent=2) if args.json else _listing_text(listed, args))
        return 0
    except NotFound as exc:
        raise StartupError(exc.message) from None
    except DatabaseUnavailable as exc:
        raise StartupError(f"cannot use the database at {where}: {exc}") from None
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn):
        raise StartupError(
            f"the schema of the database at {where} is older than this version: run operator-service migrate"
        ) from None
    except psycopg2.Error as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StartupError(f"the database at {where} refused: {first_line}") from None
    finally:
        db.close()


def _moment(text: str) -> float:
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bounded(lowest: int, highest: int):
    def number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = lowest - 1
        if not lowest <= value <= highest:
            raise argparse.ArgumentTypeError(f"must be a whole number from {lowest} to {highest}, got {text!r}")
        return value

    return number


def _when(epoch: str | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(epoch))) if epoch else "-"


def _ending(item: dict) -> str:
    if not item["endReason"]:
        return "-"
    code = item["exitCode"]
    return item["endReason"] + (f" ({code})" if code is not None else "")


def _listing_text(listed: list[dict], args: argparse.Namespace) -> str:
    header = ("JOB", "STATUS", "CREATED (UTC)", "FINISHED (UTC)", "ENVIRONMENT", "OWNER", "ENDED")
    rows = [
        (
            item["jobId"],
            f"{item['status']} {(item['statusText'] or '').strip()}",
            _when(item["dateCreated"]),
            _when(item["dateFinished"]),
            item["environment"] or "-",
            item["owner"] or "-",
            _ending(item),
        )
        for item in listed
    ]
    widths = [max(len(str(row[column])) for row in [header, *rows]) for column in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    first = args.offset + 1
    summary = f"jobs {first}-{args.offset + len(listed)}" if listed else "no jobs"
    if len(listed) == args.limit:
        summary += f"; next page: --offset {args.offset + args.limit}"
    return "\n".join([*lines, summary])


def _job_text(record: dict) -> str:
    fields = [key for key in record if key not in ("history", "results")]
    width = max(len(key) for key in fields)
    lines = [f"{key.ljust(width)}  {_shown(key, record[key])}" for key in fields]
    lines.append(f"{'results'.ljust(width)}  {len(record['results'])} file(s)")
    lines += [
        f"  {entry.get('type', '?')}: {entry.get('url', '')}" for entry in record["results"] if isinstance(entry, dict)
    ]
    lines.append("history (UTC):")
    for entry in record["history"]:
        change = f"{entry['status']} {(entry['statusText'] or '').strip()}, stopreq {entry['stopreq']}"
        if entry["removed"]:
            change += ", removed"
        if entry["dateFinished"]:
            change += f", finished: {_ending(entry)}"
        if entry["dateResultsExpired"]:
            change += ", results expired"
        lines.append(f"  {_when(entry['time'])}  {change}  (by {entry['changedBy'] or 'an unnamed session'})")
    return "\n".join(lines)


def _shown(key: str, value: Any) -> str:
    if key in ("dateCreated", "dateFinished", "lastStatusUpdate", "dateResultsExpired"):
        return _when(value)
    return "-" if value is None else str(value)
