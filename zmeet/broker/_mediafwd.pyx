# cython: language_level=3, boundscheck=False, wraparound=False
"""The broker's media-lane forwarding loop in C: the frame-shape checks of
:func:`zmeet.broker.media.well_formed` and the sends, around the one Python forwarding rule,
:meth:`zmeet.broker.media.MediaLane.route` (docs/protocol.md, 3.9), without Python's cost per
socket call.

A media frame is five parts in (``token, header, command, meta, payload``) and five out
(``topic, header, command, meta, payload``). In Python each part costs a pyzmq call of 3 to 5 µs;
a forwarder that reads every frame spends 40 to 50 µs a frame in socket calls alone, against a
bare ``zmq.proxy``'s 17 to 20 µs (benchmarks/NOTES.md). Here the parts are ``zmq_msg_t`` on the C
stack, received and sent with libzmq's own calls, and only what routing needs (the token and the
meta) becomes a Python object, handed to ``route``. The header, command, meta and payload go out
as the very messages that came in (``zmq_msg_send`` hands them over, nothing is copied).

What this module depends on, and how each is checked:

- libzmq is the one pyzmq loaded: its functions are looked up through the handle of pyzmq's
  backend module, ``zmq.backend.cython._zmq`` (``dlsym`` searches a library's dependencies), so
  this module links against nothing and cannot end up with a second libzmq in the process. That
  module is private to pyzmq: its layout (a compiled ``_zmq`` that links libzmq) was checked
  for pyzmq 26.0 to 27.x, which pyproject.toml's ``pyzmq>=26,<28`` pins. At import, anything
  else (another pyzmq, another backend, a libzmq that does not export its functions or is not
  4.2 to 4.x) raises ImportError, and the broker forwards in Python.
- ``zmq_msg_t``: pyzmq ships no ``zmq.h`` (and its own ``libzmq.pxd`` declares the type opaque,
  for a build that has the header), so it is declared here as ``zmq.h`` of libzmq 4.2 to 4.3.5
  defines it: 64 octets, aligned as a pointer. A message is only ever handled by address through
  libzmq's calls; what must match is its size and alignment. Where a ``zmq.h`` is on the
  compiler's include path (a libzmq development package), the build checks both against it.

The loop never blocks: :meth:`MediaForwarder.forward` reads what is waiting (``ZMQ_DONTWAIT``)
and returns; the lane's greenlet waits for more on a gevent io watcher on the socket's
``ZMQ_FD`` after :meth:`MediaForwarder.incoming` says nothing waits, so the gevent hub stays in
charge (../shared/DESIGN.md).
"""

import ctypes

import zmq

PYZMQ_CHECKED = ((26, 0), (28, 0))
"""The pyzmq versions, from (included) and to (excluded), whose backend layout and libzmq this
module was checked against; the same range as pyproject.toml's pin."""

LIBZMQ_CHECKED = ((4, 2), (5, 0))
"""The libzmq versions whose ``zmq_msg_t`` is the one declared here (64 octets)."""

if not PYZMQ_CHECKED[0] <= zmq.pyzmq_version_info()[:2] < PYZMQ_CHECKED[1]:
    raise ImportError(f"pyzmq {zmq.pyzmq_version()} is outside the versions checked "
                      f"({PYZMQ_CHECKED}): forwarding in Python")
if not LIBZMQ_CHECKED[0] <= zmq.zmq_version_info()[:2] < LIBZMQ_CHECKED[1]:
    raise ImportError(f"libzmq {zmq.zmq_version()} is outside the versions whose zmq_msg_t is "
                      f"declared here ({LIBZMQ_CHECKED}): forwarding in Python")
try:
    import zmq.backend.cython._zmq as _pyzmq_backend
except ImportError as exc:  # another layout, or the CFFI backend
    raise ImportError(f"pyzmq has no compiled backend zmq.backend.cython._zmq: {exc}") from exc
if not issubclass(zmq.Socket, getattr(_pyzmq_backend, "Socket", ())):
    raise ImportError("pyzmq's sockets are not those of zmq.backend.cython._zmq")

from cpython.bytes cimport PyBytes_FromString, PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EINTR
from libc.stdint cimport uintptr_t
from libc.string cimport memcmp


cdef extern from *:
    """
    /* zmq_msg_t as zmq.h of libzmq 4.2 to 4.3.5 defines it for GCC and Clang (pyzmq's wheels
       ship no zmq.h): 64 octets, aligned as a pointer. */
    typedef struct { unsigned char _[64] __attribute__((aligned(sizeof(void *)))); } zmeet_msg_t;
    #if defined(__has_include)
    #  if __has_include(<zmq.h>)
    #    include <zmq.h>
    #    if ZMQ_VERSION_MAJOR != 4
    #      error "zmq.h is not libzmq 4's: zmeet_msg_t is declared for libzmq 4.2 to 4.x"
    #    endif
         _Static_assert(sizeof(zmeet_msg_t) == sizeof(zmq_msg_t),
                        "zmeet_msg_t is not the size of zmq.h's zmq_msg_t");
         _Static_assert(_Alignof(zmeet_msg_t) == _Alignof(zmq_msg_t),
                        "zmeet_msg_t is not aligned as zmq.h's zmq_msg_t");
    #    define ZMEET_MSG_CHECKED 1
    #  endif
    #endif
    #ifndef ZMEET_MSG_CHECKED
    #  define ZMEET_MSG_CHECKED 0
    #endif
    /* parts of a media-in message: token, header, command, meta, payload (media.FRAME_PARTS) */
    enum { ZMEET_MEDIA_PARTS = 5 };
    """
    ctypedef struct zmeet_msg_t:
        pass
    enum: ZMEET_MEDIA_PARTS
    enum: ZMEET_MSG_CHECKED


PARTS = ZMEET_MEDIA_PARTS
"""The parts of a media-in message this module reads (``zmeet.broker.media.FRAME_PARTS``)."""

MSG_CHECKED_AGAINST_HEADER = bool(ZMEET_MSG_CHECKED)
"""Whether this build checked ``zmq_msg_t``'s size and alignment against a ``zmq.h``."""


ctypedef int (*msg_fn)(zmeet_msg_t *) noexcept nogil
ctypedef int (*msg_io_fn)(zmeet_msg_t *, void *, int) noexcept nogil
ctypedef void *(*msg_data_fn)(zmeet_msg_t *) noexcept nogil
ctypedef size_t (*msg_size_fn)(const zmeet_msg_t *) noexcept nogil
ctypedef int (*msg_more_fn)(const zmeet_msg_t *) noexcept nogil
ctypedef int (*send_fn)(void *, const void *, size_t, int) noexcept nogil
ctypedef int (*errno_fn)() noexcept nogil
ctypedef int (*getsockopt_fn)(void *, int, void *, size_t *) noexcept nogil
ctypedef const char *(*msg_gets_fn)(const zmeet_msg_t *, const char *) noexcept nogil

cdef msg_fn zmq_msg_init
cdef msg_fn zmq_msg_close
cdef msg_io_fn zmq_msg_recv
cdef msg_io_fn zmq_msg_send
cdef msg_data_fn zmq_msg_data
cdef msg_size_fn zmq_msg_size
cdef msg_more_fn zmq_msg_more
cdef send_fn zmq_send
cdef errno_fn zmq_errno
cdef getsockopt_fn zmq_getsockopt
cdef msg_gets_fn zmq_msg_gets

try:
    _libzmq = ctypes.CDLL(_pyzmq_backend.__file__)
except OSError as exc:
    raise ImportError(f"cannot open pyzmq's backend to find libzmq: {exc}") from exc


cdef uintptr_t _symbol(str name) except 0:
    """The address of libzmq's function ``name``; ImportError (the broker then forwards in
    Python) if pyzmq's libzmq does not export it (a static, hidden-symbol build)."""
    try:
        address = ctypes.cast(getattr(_libzmq, name), ctypes.c_void_p).value
    except AttributeError:
        address = None
    if not address:
        raise ImportError(f"pyzmq's libzmq does not export {name}")
    return <uintptr_t>address


zmq_msg_init = <msg_fn>_symbol("zmq_msg_init")
zmq_msg_close = <msg_fn>_symbol("zmq_msg_close")
zmq_msg_recv = <msg_io_fn>_symbol("zmq_msg_recv")
zmq_msg_send = <msg_io_fn>_symbol("zmq_msg_send")
zmq_msg_data = <msg_data_fn>_symbol("zmq_msg_data")
zmq_msg_size = <msg_size_fn>_symbol("zmq_msg_size")
zmq_msg_more = <msg_more_fn>_symbol("zmq_msg_more")
zmq_send = <send_fn>_symbol("zmq_send")
zmq_errno = <errno_fn>_symbol("zmq_errno")
zmq_getsockopt = <getsockopt_fn>_symbol("zmq_getsockopt")
zmq_msg_gets = <msg_gets_fn>_symbol("zmq_msg_gets")

cdef int DONTWAIT = zmq.DONTWAIT
cdef int SNDMORE = zmq.SNDMORE
cdef int EVENTS = zmq.EVENTS
cdef int POLLIN = zmq.POLLIN


# libzmq calls with ZMQ_DONTWAIT, retried on EINTR as pyzmq does (a message is untouched when a
# call fails); -1 otherwise, with the cause in zmq_errno()

cdef inline int _recv(zmeet_msg_t *msg, void *sock) noexcept nogil:
    cdef int rc
    while True:
        rc = zmq_msg_recv(msg, sock, DONTWAIT)
        if rc >= 0 or zmq_errno() != EINTR:
            return rc


cdef inline int _send(zmeet_msg_t *msg, void *sock, int more) noexcept nogil:
    cdef int rc
    while True:
        rc = zmq_msg_send(msg, sock, DONTWAIT | more)
        if rc >= 0 or zmq_errno() != EINTR:
            return rc


cdef inline int _send_bytes(void *sock, const char *data, size_t size, int more) noexcept nogil:
    cdef int rc
    while True:
        rc = zmq_send(sock, data, size, DONTWAIT | more)
        if rc >= 0 or zmq_errno() != EINTR:
            return rc


cdef inline int _events(void *sock) noexcept nogil:
    """``ZMQ_EVENTS`` of ``sock`` (it also processes libzmq's pending commands, which is what
    re-arms the edge-triggered ``ZMQ_FD``), retried on EINTR; -1 if the call fails otherwise,
    with the cause in zmq_errno()."""
    cdef int events = 0
    cdef size_t size
    while True:
        size = sizeof(int)
        if zmq_getsockopt(sock, EVENTS, &events, &size) == 0:
            return events
        if zmq_errno() != EINTR:
            return -1


cdef inline bytes _bytes_of(zmeet_msg_t *msg):
    return PyBytes_FromStringAndSize(<char *>zmq_msg_data(msg), zmq_msg_size(msg))


cdef inline bytes _user_id_of(zmeet_msg_t *msg):
    """The ZAP ``User-Id`` of the connection ``msg`` came from, empty if it has none."""
    cdef const char *value = zmq_msg_gets(msg, b"User-Id")
    return b"" if value == NULL else PyBytes_FromString(value)


cdef inline bint _equals(zmeet_msg_t *msg, bytes expected):
    cdef Py_ssize_t n = len(expected)
    return <Py_ssize_t>zmq_msg_size(msg) == n and (
        n == 0 or memcmp(zmq_msg_data(msg), <const char *>expected, n) == 0)


cdef class MediaForwarder:
    """Forward media frames from the broker's media-in ROUTER to its media-out XPUB.

    ``router`` and ``xpub`` are the lane's pyzmq sockets (green or not: only their libzmq
    handles are used, and ``closed`` is checked before each batch). ``route(token, meta,
    user_id) -> bytes | None`` is the forwarding rule past the frame's shape
    (:meth:`zmeet.broker.media.MediaLane.route`): called with the token, the meta octets and
    the connection's ZAP ``User-Id`` (octets, empty if none) of each well-formed frame, it
    returns the out topic or None to drop. ``stats`` is the lane's
    dict: ``media_in`` and ``media_dropped`` are counted in it. ``header`` and ``command`` are
    the octets a FRAME's second and third parts must equal, ``max_meta`` and ``max_payload``
    the largest meta and payload in octets (the constants of
    :func:`zmeet.broker.media.well_formed`).
    """

    cdef object _router, _xpub
    cdef void *_in
    cdef void *_out
    cdef dict _stats
    cdef object _route
    cdef bytes _header, _command
    cdef size_t _max_meta, _max_payload
    cdef bint _broken

    def __cinit__(self, router, xpub, route, dict stats, bytes header, bytes command,
                  size_t max_meta, size_t max_payload):
        self._router, self._xpub = router, xpub
        self._in = <void *><uintptr_t>router.underlying
        self._out = <void *><uintptr_t>xpub.underlying
        self._route, self._stats = route, stats
        self._header, self._command = header, command
        self._max_meta, self._max_payload = max_meta, max_payload

    def incoming(self):
        """Whether a message waits on the media-in socket (its ``ZMQ_EVENTS`` has POLLIN).
        Call it before waiting on its ``ZMQ_FD``, which is edge-triggered. Raises
        :class:`zmq.ZMQError` if the socket is closed or libzmq fails (``ETERM``, ...)."""
        return bool(self._events_of(self._router, self._in) & POLLIN)

    def subscriptions_waiting(self):
        """Whether a subscription message waits on the media-out XPUB. The forwarder's sends
        may have taken the XPUB's ``ZMQ_FD`` edge meanwhile: when this is true, whoever
        waits on that socket must be told (for a green socket, a green ``get(EVENTS)``).
        Raises :class:`zmq.ZMQError` as :meth:`incoming` does."""
        return bool(self._events_of(self._xpub, self._out) & POLLIN)

    cdef int _events_of(self, owner, void *sock) except -1:
        cdef int events, err
        if owner.closed:
            raise zmq.ZMQError(zmq.ENOTSOCK)
        events = _events(sock)
        if events < 0:
            err = zmq_errno()
            raise zmq.ZMQError(err)
        return events

    def forward(self, int limit):
        """Forward up to ``limit`` messages waiting on the media-in socket, without blocking.

        Returns the number of messages read (forwarded or dropped); fewer than ``limit`` means
        the socket had no more (``EAGAIN``). Raises :class:`zmq.ZMQError` if a socket is closed
        or libzmq fails otherwise (``ETERM``, ...); a message being read is then discarded.
        """
        cdef zmeet_msg_t parts[ZMEET_MEDIA_PARTS]
        cdef zmeet_msg_t extra
        cdef int count, i, err
        cdef int read = 0
        cdef bint whole
        if self._router.closed or self._xpub.closed:
            raise zmq.ZMQError(zmq.ENOTSOCK)
        if self._broken:  # the XPUB was left inside a message: the next would be glued to it
            raise zmq.ZMQError(zmq.EFSM, "media-out was left inside a message by a failed send")
        while read < limit:
            zmq_msg_init(&parts[0])
            if _recv(&parts[0], self._in) < 0:
                err = zmq_errno()
                zmq_msg_close(&parts[0])
                if err == EAGAIN:
                    break
                raise zmq.ZMQError(err)
            count, whole = 1, True
            # the rest of the message is already here (ZeroMQ delivers whole messages); read
            # all of it, past the fifth part too, so the next read starts at a boundary
            while zmq_msg_more(&parts[count - 1]):
                if count == ZMEET_MEDIA_PARTS:
                    whole = False
                    while True:
                        zmq_msg_init(&extra)
                        if _recv(&extra, self._in) < 0:
                            err = zmq_errno()
                            zmq_msg_close(&extra)
                            self._close(parts, count)
                            raise zmq.ZMQError(err)
                        i = zmq_msg_more(&extra)
                        zmq_msg_close(&extra)
                        if not i:
                            break
                    break
                zmq_msg_init(&parts[count])
                if _recv(&parts[count], self._in) < 0:
                    err = zmq_errno()
                    self._close(parts, count + 1)
                    raise zmq.ZMQError(err)
                count += 1
            read += 1
            try:
                self._forward_one(parts, count if whole else 0)
            finally:
                self._close(parts, count)
        return read

    cdef void _close(self, zmeet_msg_t *parts, int count) noexcept:
        cdef int i
        for i in range(count):
            zmq_msg_close(&parts[i])  # a part already sent is empty: closing it is a no-op

    cdef int _forward_one(self, zmeet_msg_t *parts, int count) except -1:
        cdef dict stats = self._stats
        cdef object topic
        stats["media_in"] += 1
        # the frame-shape checks of zmeet.broker.media.well_formed, on the parts in place
        if (
            count != ZMEET_MEDIA_PARTS
            or not _equals(&parts[1], self._header)
            or not _equals(&parts[2], self._command)
            or zmq_msg_size(&parts[3]) > self._max_meta
            or zmq_msg_size(&parts[4]) > self._max_payload
        ):
            stats["media_dropped"] += 1
            return 0
        # the rest of the rule, written once in Python: MediaLane.route(token, meta, user_id)
        topic = self._route(_bytes_of(&parts[0]), _bytes_of(&parts[3]), _user_id_of(&parts[0]))
        if topic is None:
            stats["media_dropped"] += 1
            return 0
        cdef bytes topic_bytes = <bytes?>topic
        cdef int i, err
        # An XPUB never blocks and never refuses a part: past a subscriber's SNDHWM it drops the
        # whole message (counted by no one), as long as ZMQ_XPUB_NODROP stays off. Only ETERM
        # or ENOTSOCK can fail a send here.
        if _send_bytes(self._out, <const char *>topic_bytes, len(topic_bytes), SNDMORE) < 0:
            err = zmq_errno()
            raise zmq.ZMQError(err)
        for i in range(1, ZMEET_MEDIA_PARTS):
            if _send(&parts[i], self._out, SNDMORE if i < ZMEET_MEDIA_PARTS - 1 else 0) < 0:
                err = zmq_errno()
                self._broken = True
                raise zmq.ZMQError(err)
        return 0
