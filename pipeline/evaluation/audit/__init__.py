"""The data audit (`vit-pipeline audit`): every image embedded once with a model, then one small check per kind of
issue (label issues, exact and near duplicates, outliers, image issues), each giving every image a score in [0, 1]
(low: likely an issue) and an issue flag, as cleanlab's Datalab issue managers do; the report iterates over them.

`embed` runs the model, `neighbours` finds each image's nearest neighbours, `checks` holds the checks and their
registry, `report` writes audit_report.json / .md, issues.csv, exclude.txt and the image grids.
"""
