"""`tolk bench`: load on any Tolk deployment, and what it costs per utterance.

`program` builds each session's speech from real clips, `words` times their
words, `session` streams one session and timestamps what comes back,
`report` turns the samples into percentiles, JSON and plots, and `runner`
runs the scenario at each load level.
"""
