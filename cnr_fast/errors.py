"""User-facing errors: one clear line naming the problem and the fix; the CLI exits 2."""


class UserError(Exception):
    """Bad input from the user. The message says what is wrong and how to fix it."""

    exit_code = 2
