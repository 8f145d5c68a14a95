from iotflow.cli import main

main()
