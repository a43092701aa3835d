"""The HTTP side of emo-prep: the local stand-in for DashScope's EMO API (`sandbox`).

Nothing is imported here, so that `import pipeline` (and `emo-prep check`) never loads the web
framework; import `pipeline.serve.sandbox` where it is needed.
"""
