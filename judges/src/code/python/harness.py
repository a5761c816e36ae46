# The test harness's process: runs the tests (tests.py) with every function
# the candidate defines replaced by a proxy that calls it in the candidate's
# process, over fds 3 (replies in) and 4 (calls out), with plain data only.
# It prints the run's token (read from stdin) only after every test ran and
# returned: nothing the candidate sends can print it.


class CandidateExited(BaseException):
    """The candidate's process ended or broke the protocol; no test can
    pass after this (a BaseException, so `except Exception` in a test does
    not swallow it)."""


class CandidateError(Exception):
    """An exception the candidate raised whose type is not a builtin
    exception: its type name and message."""


class _Candidate:
    def __init__(self, rx, tx):
        self.rx, self.tx, self.gone = rx, tx, None

    def _lost(self, why):
        self.gone = why
        raise CandidateExited(why)

    def receive(self, during):
        try:
            message = _cgpo_recv(self.rx)
        except (_Malformed, OSError) as e:
            self._lost("the candidate's process sent a malformed message %s: %s" % (during, e))
        if message is None:
            self._lost("the candidate's process exited %s" % during)
        if type(message) is not dict or len(message) != 1:
            self._lost("the candidate's process sent an unexpected message %s" % during)
        return next(iter(message.items()))

    def call(self, name, args, kwargs):
        if self.gone:
            raise CandidateExited(self.gone)
        try:
            request = {"call": name, "args": _cgpo_encode(args), "kwargs": _cgpo_encode(kwargs)}
        except _Unplain as e:
            raise TypeError("cannot pass %s to the candidate's %s(): only plain data (%s) crosses "
                            "to the candidate's process" % (e, name, _PLAIN)) from None
        try:
            _cgpo_send(self.tx, request)
        except OSError:
            self._lost("the candidate's process exited before the call to %s()" % name)
        kind, body = self.receive("during the call to %s()" % name)
        if kind == "ok":
            try:
                return _cgpo_decode(body)
            except _Malformed as e:
                self._lost("the candidate's process sent a malformed result of %s(): %s" % (name, e))
        if kind == "unplain" and type(body) is str:
            raise TypeError("%s() returned %s, which cannot cross to the tests: only plain data (%s) "
                            "does" % (name, body[:200], _PLAIN))
        if kind == "raised" and type(body) is list and len(body) == 2 and all(type(s) is str for s in body):
            raise _exception(*body)
        self._lost("the candidate's process sent an unexpected reply to %s()" % name)


def _exception(type_name, message):
    """The builtin exception the candidate raised, or a CandidateError."""
    import builtins
    cls = getattr(builtins, type_name, None) if type_name.isidentifier() else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return CandidateError("%s: %s" % (type_name, message))


def _proxy(candidate, name):
    def call(*args, **kwargs):
        return candidate.call(name, args, kwargs)
    call.__name__ = call.__qualname__ = name
    return call


def _cgpo_harness():
    token = sys.stdin.readline().strip()
    entry_point = sys.argv[3]
    _cgpo_stdin_to_null()
    _cgpo_setup()
    import builtins
    os.write(1, _START)
    candidate = _Candidate(3, 4)
    try:
        kind, _ = candidate.receive("before it started")
    except CandidateExited:
        kind = None
    if kind != "hello":
        # The launcher's setup failed before any candidate code ran: the
        # sandbox's fault, not the candidate's.
        sys.stdout.flush()
        os.write(1, ("\n%s:nostart\n" % token).encode())
        return
    ns = {"__name__": "__main__", "__builtins__": builtins, "__file__": "tests.py"}
    try:
        kind, body = candidate.receive("while loading its code")
        if kind == "load_error" and type(body) is str:
            sys.stderr.write(body)
            sys.stderr.flush()
            os._exit(1)
        if kind != "ready" or type(body) is not list:
            candidate._lost("the candidate's process sent an unexpected message while loading")
        for name in body:
            if type(name) is not str or not name.isidentifier():
                candidate._lost("the candidate's process named a function badly")
            # A candidate's `abs` or `len` must not answer for the tests'
            # builtins: only the entry point may take a builtin's name.
            if name == entry_point or name not in builtins.__dict__:
                ns[name] = _proxy(candidate, name)
        if entry_point:
            ns["__cgpo_entry__"] = _proxy(candidate, entry_point)
        sys.argv = ["tests.py"]
        with open("tests.py", "rb") as f:
            code = compile(f.read(), "tests.py", "exec")
        exec(code, ns)
    except CandidateExited:
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(3)
    sys.stdout.flush()
    os.write(1, ("\n%s:pass\n" % token).encode())


_cgpo_harness()
