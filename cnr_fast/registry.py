"""The one kind of registry that methods, audit metrics and scenarios share.

A `Registry` maps a name to an entry (anything with a `.name`) in registration order. Every registry
has the same rules:

- `register(entry)` refuses a name already taken, unless `replace=True`;
- `unregister(name)` removes a name; the built-in entries (marked with `seal_builtins()` once the
  package has registered its own) cannot be removed, only replaced;
- `find(name)` returns the entry, or raises one UserError line that names the closest names and every
  name there is (`get` stays dict's);
- `names()` lists them, in registration order (built-ins first).

It is a dict, so reading it (`in`, `[]`, `.items()`) works as before.
"""

from __future__ import annotations

import difflib

from .errors import UserError


class Registry(dict):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind  # "method", "metric", "scenario": the word the messages use
        self._builtins: frozenset[str] = frozenset()

    def register(self, entry, replace: bool = False):
        """Add `entry` under entry.name; a name already registered is refused unless replace=True."""
        if entry.name in self and not replace:
            raise ValueError(f"{self.kind} {entry.name!r} is already registered (pass replace=True to replace it)")
        self[entry.name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove a registered name (an unknown one: nothing happens); a built-in is refused."""
        if name in self._builtins:
            raise ValueError(f"{name!r} is a built-in {self.kind}; register another under its name with "
                             "replace=True instead")
        self.pop(name, None)

    def find(self, name: str):
        """The entry of `name`; an unknown name is a UserError naming the closest ones."""
        if name in self:
            return self[name]
        lower = {k.lower(): k for k in self}
        close = ([lower[name.lower()]] if isinstance(name, str) and name.lower() in lower else
                 difflib.get_close_matches(name, list(self), n=3))
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown {self.kind} {name!r}{hint}; choose one of {', '.join(self)}")

    def names(self) -> tuple[str, ...]:
        return tuple(self)

    def seal_builtins(self) -> None:
        """The entries registered so far are the package's own: they can be replaced, never removed."""
        self._builtins = frozenset(self)
