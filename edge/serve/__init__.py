"""The clinic loop: a local web page + JSON API (edge.serve.web) and a DICOM node answering each image with a
Structured Report (edge.serve.dicom_node, edge.serve.sr). Both share one loaded model (edge.serve.service).

Needs the [serve] extra (fastapi, uvicorn, python-multipart, pynetdicom, highdicom); `import edge` never imports it.
"""
