"""Data: image folders and preprocessing (``images``, no torch), sample images
(``samples``), torch datasets (``datasets``)."""
