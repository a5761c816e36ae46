# The code judge's launchers start with this prelude (see sandbox.rs): the
# setup that runs before any untrusted code, and the plain-data codec that
# is the only thing crossing between the test harness and the candidate.
import os, sys

_START = b"__cgpo_start__\n"
_PLAIN = "None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset"
_MAX_FRAME = 1 << 26
_MAX_DEPTH = 200


def _cgpo_setup():
    """Adds what `site` would (under -S, without running .pth files), drops
    to the run's uid (argv[1], when not -1) and sets RLIMIT_NPROC (argv[2])."""
    uid, nproc = int(sys.argv[1]), int(sys.argv[2])
    import resource
    if sys.flags.no_site:
        import site
        site.setquit(); site.setcopyright(); site.sethelper()
        sys.path.extend(p for p in site.getsitepackages() if os.path.isdir(p))
    if uid >= 0:
        os.setgroups([]); os.setgid(uid); os.setuid(uid)
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _cgpo_stdin_to_null():
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


class _Unplain(Exception):
    """A value that is not plain data (or is nested too deeply)."""


class _Malformed(Exception):
    """Bytes on the channel that are not a well-formed message."""


# A subclass of a plain type crosses as its base type's value, copied by
# the base type's own slot (never by a method the subclass overrides).
_BASES = (
    (int, int.__int__), (float, float.__float__), (str, str.__str__),
    (bytes, lambda b: bytes.__getitem__(b, slice(None))),
    (list, list.copy), (tuple, lambda t: tuple.__getitem__(t, slice(None))),
    (dict, dict.copy), (set, set.copy), (frozenset, frozenset.copy),
)


def _cgpo_encode(x, depth=0):
    """x as JSON-ready data, tagged so that decoding gives back the same
    plain types; anything else raises _Unplain. Types are read with
    type(), which an object cannot fake (isinstance trusts __class__)."""
    if depth > _MAX_DEPTH:
        raise _Unplain("a value nested more than %d deep" % _MAX_DEPTH)
    t = type(x)
    if x is None or t is bool or t is str or t is float:
        return x
    if t is int:
        return x if x.bit_length() <= 4096 else {"x": hex(x)}
    d = depth + 1
    if t is list:
        return {"l": [_cgpo_encode(e, d) for e in x]}
    if t is tuple:
        return {"t": [_cgpo_encode(e, d) for e in x]}
    if t is dict:
        return {"d": [[_cgpo_encode(k, d), _cgpo_encode(v, d)] for k, v in x.items()]}
    if t is set:
        return {"s": [_cgpo_encode(e, d) for e in x]}
    if t is frozenset:
        return {"f": [_cgpo_encode(e, d) for e in x]}
    if t is bytes:
        return {"b": x.hex()}
    for base, copy in _BASES:
        if issubclass(t, base):
            y = copy(x)
            if type(y) is not base:
                raise _Unplain("a %s subclass that does not copy to %s" % (base.__name__, base.__name__))
            return _cgpo_encode(y, d)
    raise _Unplain("a value of type %s" % t.__name__)


def _cgpo_decode(v, depth=0):
    """The inverse of _cgpo_encode on json.loads output; anything that
    _cgpo_encode cannot have produced raises _Malformed."""
    if depth > _MAX_DEPTH:
        raise _Malformed("nested too deeply")
    t = type(v)
    if v is None or t is bool or t is int or t is float or t is str:
        return v
    if t is not dict or len(v) != 1:
        raise _Malformed("not a tagged value")
    (tag, body), = v.items()
    d = depth + 1
    if tag == "x" and type(body) is str:
        try:
            return int(body, 16)
        except ValueError:
            raise _Malformed("bad integer") from None
    if tag == "b" and type(body) is str:
        try:
            return bytes.fromhex(body)
        except ValueError:
            raise _Malformed("bad bytes") from None
    if type(body) is not list:
        raise _Malformed("bad container")
    try:
        if tag == "l":
            return [_cgpo_decode(e, d) for e in body]
        if tag == "t":
            return tuple(_cgpo_decode(e, d) for e in body)
        if tag == "s":
            return set(_cgpo_decode(e, d) for e in body)
        if tag == "f":
            return frozenset(_cgpo_decode(e, d) for e in body)
        if tag == "d":
            out = {}
            for pair in body:
                if type(pair) is not list or len(pair) != 2:
                    raise _Malformed("bad dict entry")
                out[_cgpo_decode(pair[0], d)] = _cgpo_decode(pair[1], d)
            return out
    except TypeError:
        raise _Malformed("unhashable set element or dict key") from None
    raise _Malformed("unknown tag")


def _cgpo_send(fd, message):
    import json
    data = json.dumps(message, separators=(",", ":")).encode()
    data = len(data).to_bytes(8, "big") + data
    while data:
        data = data[os.write(fd, data):]


def _cgpo_read_exactly(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _cgpo_recv(fd):
    """The next message, or None at end-of-file before one starts."""
    import json
    head = os.read(fd, 8)
    if not head:
        return None
    if len(head) < 8:
        rest = _cgpo_read_exactly(fd, 8 - len(head))
        if rest is None:
            raise _Malformed("truncated frame header")
        head += rest
    n = int.from_bytes(head, "big")
    if n > _MAX_FRAME:
        raise _Malformed("a frame of %d bytes" % n)
    data = _cgpo_read_exactly(fd, n)
    if data is None:
        raise _Malformed("truncated frame")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise _Malformed("not JSON") from None
