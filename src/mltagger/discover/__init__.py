"""Tags the stream asks for: clustering the items the approved list does not cover into named,
ranked proposals (`mltagger discover`), and the held-out measurement of whether a topic the
classifier never learned comes back as one cluster (`mltagger discover-eval`)."""
