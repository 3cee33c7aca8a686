"""The one exception type that the command line reports as a one-line error."""


class LayerscanError(Exception):
    """Bad input or an unusable file: the message says what went wrong and what to do."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup Ctrl-C runs also runs for it."""


class Notice(UserWarning):
    """Something the user should know that is not an error (e.g. the logit lens is off); the
    command line prints it as one line."""


class Caution(Notice):
    """A Notice that the run goes on but likely will not give what the user wants (e.g. a
    corpus the autoencoder stores exactly); printed as a one-line warning."""
