"""The continual-learning cycle (`mltagger cycle`): labels from the stream to a promoted model,
with a person only when a gate trips. Above serving and training, like monitoring."""
