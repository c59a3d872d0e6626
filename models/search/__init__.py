"""Using a finished searcher: the Task Library runtime, results, evaluation, HTML and the web app."""
