"""The vocabulary of pxnode: messages, wire schemas, codecs, interfaces, errors.

This package imports neither ``actors`` nor ``supervisors``.
"""
