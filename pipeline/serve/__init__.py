"""The HTTP side of emo-prep: `emo-prep serve` (`app`: the emo-detect-compatible endpoint, the
native checks, the page; `gateway`: boxes filled in front of emo-v1; `pool`: the Checker worker
processes; `answers`: DashScope's answer shapes) and the local stand-in for DashScope's EMO API
(`sandbox`).

Nothing is imported here, so that `import pipeline` (and `emo-prep check`) never loads the web
framework; import `pipeline.serve.app` or `pipeline.serve.sandbox` where it is needed.
"""
