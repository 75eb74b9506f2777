from gapmodel.cli import main

main()
