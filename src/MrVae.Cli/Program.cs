Console.WriteLine("mrvae");
