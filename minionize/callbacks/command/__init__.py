"""A command line built from a param: the template (:mod:`.builder`), its replacement
strings (:mod:`.replacements`) and shell quoting (:mod:`.shell`)."""
