# The candidate's process: loads the candidate's code, then serves the
# harness's calls on fds 3 (calls in) and 4 (replies out). It never sees
# the tests or the expected values, and what it replies is decoded by the
# harness as plain data only.


def _cgpo_serve():
    _cgpo_stdin_to_null()
    _cgpo_setup()
    import builtins
    rx, tx = 3, 4
    _cgpo_send(tx, {"hello": True})
    sys.argv = ["main.py"]
    g = {"__name__": "__main__", "__builtins__": builtins, "__file__": "main.py"}
    try:
        with open("main.py", "rb") as f:
            exec(compile(f.read(), "main.py", "exec"), g)
    except BaseException as e:
        import traceback
        _cgpo_send(tx, {"load_error": "".join(traceback.format_exception(e))[-4000:]})
        os._exit(1)
    names = sorted(k for k, v in list(g.items())
                   if type(k) is str and k.isidentifier() and not k.startswith("__") and callable(v))
    _cgpo_send(tx, {"ready": names})
    while True:
        try:
            call = _cgpo_recv(rx)
            if call is None:
                os._exit(0)
            name = call["call"]
            args = _cgpo_decode(call["args"])
            kwargs = _cgpo_decode(call["kwargs"])
        except BaseException:
            os._exit(2)
        try:
            result = g[name](*args, **kwargs)
        except BaseException as e:
            try:
                message = str(e)[:2000]
            except BaseException:
                message = "<the exception's message could not be read>"
            reply = {"raised": [type(e).__name__, message]}
        else:
            try:
                reply = {"ok": _cgpo_encode(result)}
            except (_Unplain, RecursionError) as e:
                reply = {"unplain": str(e) if type(e) is _Unplain else "a value nested too deeply"}
        _cgpo_send(tx, reply)


_cgpo_serve()
