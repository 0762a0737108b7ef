"""Where a failing case first parts from the reference: a stage ladder, filled by re-running the case once
in a probe engine and in the reference with hooks (`hooks`), compared stage by stage (`ladder`)."""
