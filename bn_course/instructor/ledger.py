"""What grading has finished, kept in the course directory so that a rerun resumes.

One JSON line per finished submission, appended (and flushed to disk) once its
grades are in the gradebook: a crash, Ctrl-C or a killed worker loses at most the
submissions in flight. A submission is graded again when its files or the course
(its source notebook, nbgrader_config.py, the grading settings) changed: both go
into its checksum.
"""

import hashlib
import json
import os
from pathlib import Path

LEDGER = "bn-course-grading.jsonl"


def checksum(folder, course_fingerprint):
    """sha256 of a submission's files (names and contents) and of the course's fingerprint."""
    digest = hashlib.sha256(course_fingerprint.encode())
    folder = Path(folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def fingerprint(*parts):
    """A short text that changes when any of ``parts`` (paths or texts) changes."""
    digest = hashlib.sha256()
    for part in parts:
        data = Path(part).read_bytes() if isinstance(part, Path) else str(part).encode()
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


class Ledger:
    """The finished submissions of a course directory: (student, assignment) -> record."""

    def __init__(self, root):
        self.path = Path(root) / LEDGER
        self.records = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # the last line of a run killed mid-write
                    continue
                self.records[record["student"], record["assignment"]] = record

    def is_done(self, student, assignment, digest):
        """Finished with these exact files and course, and not for a reason worth a retry."""
        record = self.records.get((student, assignment))
        return record is not None and record["checksum"] == digest and record["final"]

    def problem(self, student, assignment):
        record = self.records.get((student, assignment))
        return record["problem"] if record else None

    def record(self, student, assignment, digest, problem=None, final=True):
        """Append a record and get it to disk before going on."""
        record = {"student": student, "assignment": assignment, "checksum": digest,
                  "problem": problem, "final": final}
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()
            os.fsync(file.fileno())
        self.records[student, assignment] = record
