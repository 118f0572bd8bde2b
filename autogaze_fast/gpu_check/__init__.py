"""The GPU proof harness (``autogaze-fast gpu-check``): ``context`` (sizes, profiles, the shared run
state), ``models`` (fixture parity and end-to-end timings), ``kernels`` (each kernel against its torch
op), ``timing`` (timers, section caps), ``targets`` and ``report`` (the judged table, JSON + markdown),
``check`` (the sections run in order under their time caps)."""
