from tessera.cli import main

# Guarded: the API processes of `tessera serve --workers N` are spawned, and must not run the
# command line again when Python prepares them from this module.
if __name__ == "__main__":
    main()
