"""The AWS side of the local stack: ``template.yaml`` deployed into moto, the handlers run in
execution environments of their own.

:mod:`~local.emulator.stack` (:class:`~local.emulator.stack.LocalStack`) deploys and drives it all;
the other modules each play one piece of AWS (see docs/local.md, "Layout").
"""
