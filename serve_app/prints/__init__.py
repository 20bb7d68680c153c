"""Print versions of a variant: the request and its object key (``spec``), the post-processing
chains as data (``chain``), background removal (``matte``) and the file itself (``output``)."""
