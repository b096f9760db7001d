"""Document access control: a reader sees a document when their groups meet its ACL.

>>> can_read(("hr",), ("hr", "managers"))
True
>>> can_read((), ("finance",))
False
>>> can_read((), ())
True
"""

from __future__ import annotations

from collections.abc import Iterable


def can_read(user_groups: Iterable[str], acl_groups: Iterable[str]) -> bool:
    """A document with no ACL groups is public; otherwise one shared group is enough."""
    acl = {group.casefold() for group in acl_groups}
    if not acl:
        return True
    return not acl.isdisjoint(group.casefold() for group in user_groups)
