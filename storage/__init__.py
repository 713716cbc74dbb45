"""The log: every generation, candidate, vote, post, schedule and admin action, in SQLAlchemy 2 async.

See storage/api.py for the API; `from storage import Database`.
"""

from storage.api import Database
from storage.errors import (
                             AlreadyPosted,
                             ModerationRefused,
                             NewerSchema,
                             NotFound,
                             NotWithdrawable,
                             PostFinal,
                             PostInProgress,
                             QuotaReached,
                             ScheduleError,
                             StorageError,
                             Unusable,
)
from storage.posts import normalise_text
from storage.records import (
                             AuditInfo,
                             BlockedWordInfo,
                             CandidateInfo,
                             CheckReport,
                             GenerationInfo,
                             NewCandidate,
                             PostInfo,
                             ScheduleInfo,
                             ScheduleRun,
                             TallyRow,
                             VoteInfo,
)
from storage.schedules import next_run_after
from storage.votes import winner

__all__ = [
                             "AlreadyPosted",
                             "AuditInfo",
                             "BlockedWordInfo",
                             "CandidateInfo",
                             "CheckReport",
                             "Database",
                             "GenerationInfo",
                             "ModerationRefused",
                             "NewCandidate",
                             "NewerSchema",
                             "NotFound",
                             "NotWithdrawable",
                             "PostFinal",
                             "PostInProgress",
                             "PostInfo",
                             "QuotaReached",
                             "ScheduleError",
                             "ScheduleInfo",
                             "ScheduleRun",
                             "StorageError",
                             "TallyRow",
                             "Unusable",
                             "VoteInfo",
                             "next_run_after",
                             "normalise_text",
                             "winner",
]
