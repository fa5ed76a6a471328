"""Repair group-level errors: the method registry (:mod:`repair.methods`), the one
fine-tuning loop (:mod:`repair.loop`), weighted BatchNorm (:mod:`repair.wbn`), post-hoc
w-os (:mod:`diagnostics.wos`), background jobs (:mod:`repair.jobs`) and the page's figures
(:mod:`repair.figures`). ``python -m repair --help`` lists the commands."""
