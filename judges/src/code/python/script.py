# A standard input/output program: runs main.py as __main__ with the test's
# input on stdin. Its output is compared by the judge, outside the sandbox.


def _cgpo_script():
    _cgpo_setup()
    import runpy
    os.write(1, _START)
    sys.argv = ["main.py"]
    runpy.run_path("main.py", run_name="__main__")


_cgpo_script()
