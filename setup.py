"""Build of zmeet's one compiled module; everything else is in pyproject.toml.

``zmeet.broker._mediafwd`` is the media lane's forwarding loop in C (Cython). It is optional:
without a C compiler the install goes on and the broker forwards media in Python, the same
protocol at a higher cost per frame (docs/architecture.md, "Media forwarding").
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "zmeet.broker._mediafwd",
            ["zmeet/broker/_mediafwd.pyx"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
