"""The analyst report of a registry version: a self-contained HTML page (`index.html`) with
inline SVG figures, built by `build_report`."""

from gapmodel.report.build import Report, Section, build_report, build_sections

__all__ = ["Report", "Section", "build_report", "build_sections"]
