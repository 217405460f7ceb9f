"""One module per file-format family. Each lists what it reads in a module-level ``FORMATS`` tuple
of :class:`siren3d.io.registry.Format`; the registry finds every module here by itself, so adding a
format is adding one file. Modules import only numpy at module level: a format that needs a
third-party library (laspy, pye57) imports it when a file of that format is read.
"""
