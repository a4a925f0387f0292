"""A generated GitHub organisation for the demo and the tests: repositories, issues, pull
requests and comments, plus the changes the tests apply (edits, deletions, transfers, locks,
renames, visibility changes, PRs closed and reopened).

Timestamps advance on a simulated clock, so every change is later than everything before it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

_AREAS = (
    ("auth", "login", "password reset emails arrive late", "token refresh fails after the session expires"),
    ("search", "index", "search results miss recently updated documents", "highlighting breaks on accented words"),
    ("billing", "invoice", "invoice PDF shows the wrong currency symbol", "proration is off by one day"),
    ("api", "rate limit", "the API returns 500 when the page size is zero", "pagination links drop the filter"),
    ("ui", "dark mode", "dark mode renders tables unreadable", "the date picker ignores the user's locale"),
    ("sync", "webhook", "webhook deliveries are retried forever", "duplicate events after a network partition"),
)
_LABELS = ("bug", "enhancement", "documentation", "good first issue", "performance", "security")
_USERS = ("octocat", "hubot", "monalisa", "defunkt", "mojombo", "pjhyett")
_LANGS = ("Python", "TypeScript", "Go", "Rust")


@dataclass
class Repo:
    id: int
    owner: str
    name: str
    description: str
    language: str
    private: bool = False
    visible: bool = True  # False: the token cannot see it (deleted, or private to others) -> 404
    archived: bool = False
    topics: list[str] = field(default_factory=list)
    created: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    updated: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    old_names: list[str] = field(default_factory=list)  # full names that redirect here

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class Item:
    """An issue or a pull request (GitHub numbers both in one sequence per repository)."""

    id: int
    repo_id: int
    number: int
    title: str
    body: str
    user: str
    created: datetime
    updated: datetime
    state: str = "open"
    state_reason: str | None = None
    closed: datetime | None = None
    labels: list[str] = field(default_factory=list)
    milestone: str | None = None
    assignees: list[str] = field(default_factory=list)
    locked: bool = False
    lock_reason: str | None = None
    is_pr: bool = False
    pr_id: int = 0  # a pull request's own id (the /pulls listing's)
    draft: bool = False
    merged: datetime | None = None
    head: str = ""
    base: str = "main"
    comments: int = 0


@dataclass
class Comment:
    id: int
    repo_id: int
    number: int
    body: str
    user: str
    created: datetime
    updated: datetime
    review: bool = False  # a pull-request review comment (on a diff line)
    path: str | None = None
    line: int | None = None
    commit_id: str | None = None


@dataclass
class GitHubSite:
    org: str
    repos: dict[int, Repo]
    items: dict[int, Item]  # by issue id
    comments: dict[int, Comment]
    clock: datetime
    next_id: int = 10_000

    # -- lookups ---------------------------------------------------------------------------

    def repo_by_name(self, full_name: str) -> tuple[Repo | None, bool]:
        """The repository and whether ``full_name`` is an old name (a redirect)."""
        wanted = full_name.lower()
        for repo in self.repos.values():
            if repo.full_name.lower() == wanted:
                return repo, False
        for repo in self.repos.values():
            if wanted in (n.lower() for n in repo.old_names):
                return repo, True
        return None, False

    # -- changes (each advances the clock and bumps updated_at as GitHub does) ---------------

    def tick(self, minutes: int = 1) -> datetime:
        self.clock += timedelta(minutes=minutes)
        return self.clock

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def edit(self, issue_id: int, **changes: Any) -> Item:
        item = self.items[issue_id]
        for name, value in changes.items():
            setattr(item, name, value)
        item.updated = self.tick()
        return item

    def close(self, issue_id: int, reason: str = "completed") -> Item:
        now = self.tick()
        return self.edit(issue_id, state="closed", state_reason=reason, closed=now)

    def reopen(self, issue_id: int) -> Item:
        return self.edit(issue_id, state="open", state_reason="reopened", closed=None)

    def lock(self, issue_id: int, reason: str = "resolved") -> Item:
        return self.edit(issue_id, locked=True, lock_reason=reason)

    def delete(self, issue_id: int) -> None:
        """Deleted issues vanish from every listing, with their comments; nothing says so."""
        item = self.items.pop(issue_id)
        for cid in [c.id for c in self.comments.values() if (c.repo_id, c.number) == (item.repo_id, item.number)]:
            del self.comments[cid]

    def transfer(self, issue_id: int, to_repo: int) -> Item:
        """Moved to another repository: a new number there, gone from the old listing."""
        item = self.items[issue_id]
        number = 1 + max((i.number for i in self.items.values() if i.repo_id == to_repo), default=0)
        for c in self.comments.values():
            if (c.repo_id, c.number) == (item.repo_id, item.number):
                c.repo_id, c.number = to_repo, number
        return self.edit(issue_id, repo_id=to_repo, number=number)

    def rename_repo(self, repo_id: int, new_name: str) -> Repo:
        repo = self.repos[repo_id]
        repo.old_names.append(repo.full_name)
        repo.name = new_name
        repo.updated = self.tick()
        return repo

    def hide_repo(self, repo_id: int) -> Repo:
        """Made private to people other than the token's owner (or deleted): 404 from now on."""
        repo = self.repos[repo_id]
        repo.visible, repo.private = False, True
        repo.updated = self.tick()
        return repo

    def add_issue(self, repo_id: int, title: str, body: str = "", *, is_pr: bool = False) -> Item:
        now = self.tick()
        number = 1 + max((i.number for i in self.items.values() if i.repo_id == repo_id), default=0)
        item = Item(self.new_id(), repo_id, number, title, body, "octocat", now, now, is_pr=is_pr)
        if is_pr:
            item.pr_id, item.head = self.new_id(), f"feature/{number}"
        self.items[item.id] = item
        return item

    def add_comment(self, issue_id: int, body: str, *, review: bool = False) -> Comment:
        item = self.items[issue_id]
        now = self.tick()
        comment = Comment(self.new_id(), item.repo_id, item.number, body, "hubot", now, now, review=review)
        if review:
            comment.path, comment.line, comment.commit_id = "src/app.py", 10, "a" * 40
        self.comments[comment.id] = comment
        if not review:
            item.comments += 1
        return comment


def generate_sample_org(
    org: str = "acme", *, seed: int = 7, n_repos: int = 3, n_items: int = 24, n_comments: int = 30
) -> GitHubSite:
    """A deterministic organisation of ``n_repos`` repositories holding ``n_items`` issues and pull
    requests (about a third are PRs) and ``n_comments`` comments."""
    rnd = random.Random(seed)
    start = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    site = GitHubSite(org=org, repos={}, items={}, comments={}, clock=start)
    for r in range(n_repos):
        area = _AREAS[r % len(_AREAS)]
        repo = Repo(
            id=500 + r,
            owner=org,
            name=f"{area[0]}-service" if r < len(_AREAS) else f"{area[0]}-service-{r}",
            description=f"The {area[0]} service: {area[1]} handling and its API.",
            language=_LANGS[r % len(_LANGS)],
            topics=[area[0], area[1].replace(" ", "-")],
            created=start - timedelta(days=400 - r),
            updated=start - timedelta(days=r),
        )
        site.repos[repo.id] = repo
    repo_ids = list(site.repos)
    for n in range(n_items):
        repo_id = repo_ids[n % len(repo_ids)]
        area = _AREAS[(n + rnd.randrange(len(_AREAS))) % len(_AREAS)]
        is_pr = n % 3 == 2
        problem = area[2 + n % 2]
        title = f"Fix: {problem}" if is_pr else problem[0].upper() + problem[1:]
        body = (
            f"Steps: use the {area[1]} feature of {site.repos[repo_id].name}.\n"
            f"Expected it to work; observed that {problem}. Affects {rnd.choice(_USERS)}'s team."
        )
        item = site.add_issue(repo_id, title, body, is_pr=is_pr)
        item.user = rnd.choice(_USERS)
        item.labels = rnd.sample(_LABELS, rnd.randrange(0, 3))
        item.milestone = rnd.choice((None, "v1.0", "v1.1"))
        item.assignees = rnd.sample(_USERS, rnd.randrange(0, 2))
        if n % 4 == 3:
            site.close(item.id)
            if is_pr:
                item.merged = item.closed
    items = list(site.items.values())
    for c in range(n_comments):
        item = items[(c * 7) % len(items)]
        review = item.is_pr and c % 2 == 0
        site.add_comment(
            item.id,
            f"Reproduced on {rnd.choice(('staging', 'production', 'a laptop'))}; {rnd.choice(('looking into it', 'a fix is in review', 'needs a test'))}.",
            review=review,
        )
    return site
