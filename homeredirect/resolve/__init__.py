"""Assignment lookup: which home server a user belongs to (see `resolve.interfaces`)."""

from homeredirect.resolve.errors import AssignmentFileError, DirectoryUnavailable
from homeredirect.resolve.file_source import FileAssignmentResolver
from homeredirect.resolve.interfaces import AddressOfRecord, Assignment, IAssignmentResolver

__all__ = [
    "AddressOfRecord",
    "Assignment",
    "AssignmentFileError",
    "DirectoryUnavailable",
    "FileAssignmentResolver",
    "IAssignmentResolver",
]
