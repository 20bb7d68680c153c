"""Storyboards' engine pieces, plain library code (no Ray, no HTTP): scripts compile to scene
graphs (``compiler``), scenes compose into render plans (``composition``, ``pipeline``), and
frames export as a PDF sheet or an image sequence (``exports``). The project routes, catalog
facets and job kinds that use them live with projects."""
