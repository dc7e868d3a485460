"""Datasets as canonical Arrow tables: the synthetic shapes world, downloaders and converters.

`tables` defines the five table kinds (images, captions, vqa, gqa, nlvr2) and reads/writes them;
`synthetic` generates the embedded default's deterministic "shapes" world in those tables;
`download` fetches and verifies the official files, `source_files` lists and reads them in place
(archive members included) and `official` converts them into the tables.
"""
