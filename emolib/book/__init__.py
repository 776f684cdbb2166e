"""Stage 7, the book: the papermill runner and builder (`runner`), typed key numbers per chapter
(`results`), the comparison with published work (`compare`), chapter reports (`report`), offline plotly
figures (`plots`), cost plans (`plan`) and recorded timings (`timings`)."""
