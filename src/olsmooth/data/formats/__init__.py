"""File formats the sources read: IDX arrays, list files, and the annotation tables and MATLAB files of archives."""
